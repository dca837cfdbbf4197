"""How well can the class head name products it never saw? The probe behind docs/detector.md's "ceiling".

The served student names each YOLO box with a logistic-regression head over the pretrained
EfficientNet-Lite0 (training/hybrid.py). This probe measures, on the true boxes of a scene set's held-out
test scenes (drawings never trained on), the share the head names right, beside raw pixels and beside the
same head over an EfficientNet-Lite0 fine-tuned on the training scenes' crops (training/finetune.py,
supervised contrastive on the classes). With --source, it also draws the learning curve of the pretrained
head on every usable drawing of the classes' openclipart topics (more drawings a class than the demo
catalog sells): does more data lift it?

    .venv/bin/python docs/detector-results/head-ceiling-probe.py \
        --scenes /tmp/bench/detector/students/detector-yolo11n@5978814ca891/scenes \
        --source .vitrine/openclipart/usr/share/openclipart/png --finetune-epochs 6 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.linear_model import LogisticRegression

from core.machine import machine_info
from training.autoencoder import pixels
from training.finetune import FinetuneConfig, finetune
from training.hybrid import fit_class_head, truth
from training.labelsets import read_card
from training.photoshoot import load_cutout
from vision.embedder import IMAGENET_MEAN, IMAGENET_STD, create_embedder
from vision.image import pil_open
from vision.items import crop_box
from vitrine.demo_catalog import _usable

C = 10.0  # the served head's (fit_class_head)


def crops(scene_dir: Path, splits: tuple[str, ...]) -> tuple[list[Image.Image], np.ndarray]:
    out, labels = [], []
    for split in splits:
        for path, boxes in truth(scene_dir, split):
            with pil_open(path) as im:
                image = im.convert("RGB")
            out += [crop_box(image, box) for _, box in boxes]
            labels += [cls for cls, _ in boxes]
    return out, np.array(labels)


def flat(images: list[Image.Image]) -> np.ndarray:
    return pixels(images, 32).reshape(len(images), -1)


def accuracy(train_x, train_y, test_x, test_y, seed: int) -> float:
    model = LogisticRegression(C=C, max_iter=3000, random_state=seed).fit(train_x, train_y)
    return float((model.predict(test_x) == test_y).mean())


def finetuned_features(embedder, train, labels, test, epochs: int, seed: int):
    import torch
    from torchvision import transforms

    cfg = FinetuneConfig(epochs=epochs, batch_size=64, seed=seed)
    started = time.perf_counter()
    model, _ = finetune(embedder, train, labels, cfg, method="supervised")
    seconds = time.perf_counter() - started
    prep = transforms.Compose(
        [
            transforms.Resize((embedder.input_size, embedder.input_size), antialias=True),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN.tolist(), IMAGENET_STD.tolist()),
        ]
    )

    def pooled(images):  # the fine-tuned tower's pooled features, unit length (what a head would be fitted on)
        with torch.no_grad():
            batches = [images[i : i + 64] for i in range(0, len(images), 64)]
            rows = [model.tower(torch.stack([prep(im) for im in batch])) for batch in batches]
        return torch.nn.functional.normalize(torch.cat(rows), dim=1).numpy()

    return pooled(train), pooled(test), cfg, seconds


def learning_curve(embedder, source: Path, names: list[str], seed: int, repeats: int = 10) -> dict:
    drawings, topics = _usable(source, 10)
    drawings = [d for d in drawings if topics[d.category] in names]
    images, labels = [], []
    for d in drawings:  # each drawing on white, centred in a square: a catalog photo without the scene
        cut = load_cutout(d.path, 300)
        side = max(cut.size)
        square = Image.new("RGB", (side, side), (255, 255, 255))
        square.paste(cut, ((side - cut.width) // 2, (side - cut.height) // 2), mask=cut.getchannel("A"))
        images.append(square)
        labels.append(names.index(topics[d.category]))
    labels = np.array(labels)
    vectors = embedder.embed(images)
    rng = np.random.default_rng(seed)
    rows = []
    for per_class in (8, 17, 30, 60):
        scores = []
        for _ in range(repeats):  # a class never gives more than 70 % of its drawings to training
            train, test = [], []
            for c in range(len(names)):
                idx = rng.permutation(np.flatnonzero(labels == c))
                k = min(per_class, int(len(idx) * 0.7))
                train += list(idx[:k])
                test += list(idx[k:])
            scores.append(accuracy(vectors[train], labels[train], vectors[test], labels[test], seed))
        rows.append({"drawings_per_class": per_class, "accuracy": round(float(np.mean(scores)), 3),
                     "std": round(float(np.std(scores)), 3)})  # fmt: skip
    return {"drawings": dict(zip(names, np.bincount(labels, minlength=len(names)).tolist())), "repeats": repeats,
            "rows": rows}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenes", type=Path, required=True, help="a scene set (train, val, test) of the bench")
    ap.add_argument("--source", type=Path, help="openclipart's png folder, for the learning curve")
    ap.add_argument("--finetune-epochs", type=int, default=6, help="0: no fine-tuned row")
    ap.add_argument("--models", type=Path, default=Path(".vitrine") / "models", help="model cache (DATA_DIR/models)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import torch

    torch.manual_seed(args.seed)
    started = time.perf_counter()
    names = read_card(args.scenes)["names"]
    train, train_y = crops(args.scenes, ("train", "val"))
    test, test_y = crops(args.scenes, ("test",))
    embedder = create_embedder("efficientnet-lite0", cache_dir=args.models)
    embedder.load()
    head = fit_class_head(embedder, args.scenes, splits=("train", "val"), seed=args.seed)  # the served head
    served = float((head.probabilities(embedder.embed(test)).argmax(1) == test_y).mean())
    rows = [
        {"features": "raw pixels (32x32)", "accuracy": accuracy(flat(train), train_y, flat(test), test_y, args.seed)},
        {"features": "pretrained EfficientNet-Lite0 (the served head)", "accuracy": served},
    ]  # fmt: skip
    finetuned = None
    if args.finetune_epochs > 0:
        tr, te, cfg, seconds = finetuned_features(embedder, train, train_y, test, args.finetune_epochs, args.seed)
        name = f"fine-tuned on the training crops ({cfg.trainable_blocks} blocks, {cfg.epochs} epochs)"
        rows.append({"features": name, "accuracy": accuracy(tr, train_y, te, test_y, args.seed)})
        finetuned = cfg.as_dict() | {"seconds": round(seconds, 1)}
    for row in rows:
        row["accuracy"] = round(row["accuracy"], 3)
    curve = learning_curve(embedder, args.source, names, args.seed) if args.source else None
    out = {
        "probe": "class head accuracy on held-out true boxes",
        "scenes": str(args.scenes),
        "classes": names,
        "boxes": {"train": len(train), "test": len(test)},
        "rows": rows,
        "finetune": finetuned,
        "learning_curve": curve,
        "seed": args.seed,
        "seconds": round(time.perf_counter() - started, 1),
        "machine": machine_info(),
    }
    if args.json:
        json.dump(out, sys.stdout, indent=2)
        print()
        return
    m = out["machine"]
    print(f"{m['cpu']}, {m['usable_cpus']} cores, load {m['load_average_1m']}; seed {args.seed}; {out['seconds']} s")
    print(f"head accuracy on the {len(test)} held-out true boxes ({len(train)} training boxes, {len(names)} classes)")
    for row in rows:
        print(f"  {row['features']:<60} {row['accuracy']:.3f}")
    if curve:
        print("pretrained head on white-background drawings, by drawings a class in training:", curve["drawings"])
        for row in curve["rows"]:
            print(f"  {row['drawings_per_class']:>3} a class: {row['accuracy']:.3f} +- {row['std']:.3f}")


if __name__ == "__main__":
    main()
