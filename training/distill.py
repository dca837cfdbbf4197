"""Teach a student detector a retailer's classes from its own catalog: a label set per class, then one student.

`teach_class` labels ONE class at a time, on photos of that class's category, with a teacher:

- `catalog` (offline): each photo's product is cut out (alpha or plain background, vision.cutout),
  which gives its exact box; the photos that cut out become the class's label set.
- `owlvit` / `grounding-dino`: an open-vocabulary detector boxes the class prompt on each photo; the
  prompt is the one given, else the best of a few variants scored on the photos whose cut-out box is
  known (training.labelling).

`train_detector` turns every class's label set into composite scenes (the catalog teacher's cut-outs
pasted onto varied backgrounds beside other categories' products, exact boxes for free), trains the
YOLO student, evaluates it on scenes built only from products it never saw, exports ONNX and writes
a versioned artefact folder: `<out>/<key>/student.pt`, `student.onnx`, `card.json`, with key
`detector-<architecture>@<sha256 of the weights, 12 hex>`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image

from training.labelsets import (
    Box,
    LabelledImage,
    LabelSet,
    merge_label_sets,
    read_card,
    write_data_yaml,
    write_label_set,
)
from training.scenes import DEFAULT_SCENES, CatalogCutout, build_scene_set, cutouts_from_photos
from training.student import StudentConfig, evaluate_student, export_onnx, train_student
from vision.cutout import NoCutout, cut_out
from vision.embedder import Embedder
from vision.image import pil_open

MIN_PRODUCTS = 6  # a class needs this many products whose photos cut out (scenes hold some out for the test)
VAL_SHARE = 0.2  # of a class's products, for its label set's val split
CATALOG_TEACHER = "catalog"
MULTI_LABELS = 3  # classes a box is scored for in the second held-out figure (COCO protocol; serving uses 1)


class DistillError(ValueError):
    """A class or detector that cannot be taught as asked (too few photos, a name taken...); says why."""


@dataclass(frozen=True)
class DetectorRun:
    """A trained student: its registry key, artefact folder and card (classes, held-out mAP50 per class...)."""

    key: str
    path: Path  # the folder holding student.pt, student.onnx, card.json
    card: dict
    reused: bool = False  # trained earlier on the same inputs (train_detector's `reuse`): only the head was refitted

    @property
    def weights(self) -> Path:
        return self.path / "student.pt"


def class_slug(label: str) -> str:
    """A class label as a folder name (lower case, [a-z0-9-]); DistillError for a label with no letters or digits."""
    slug = re.sub(r"[^a-z0-9]+", "-", label.strip().lower()).strip("-")
    if not slug or len(label) > 64:
        raise DistillError(f"class label {label!r} must have letters or digits and at most 64 characters")
    return slug


def teach_class(
    label: str,
    category: str,
    photos: Sequence[tuple[str, Image.Image]],
    out_dir: Path,
    *,
    teacher: str = CATALOG_TEACHER,
    teacher_model: str | None = None,
    prompt: str | None = None,
    cache_dir: Path | None = None,
    seed: int = 0,
    min_products: int = MIN_PRODUCTS,
    card_extra: dict | None = None,
) -> Path:
    """Label one class on its category's (product id, photo) pairs with a teacher; write its label set."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise DistillError(f"class {label!r} is already present ({out_dir}); pick another label")
    cut: dict[str, list[tuple[str, Image.Image, Box]]] = {}
    stems: dict[str, str] = {}  # every photo's stem -> its product
    rejected: Counter = Counter()
    for k, (product, photo) in enumerate(photos):
        stem = f"{_stem(product)}-{k}"
        stems[stem] = product
        try:
            found = cut_out(photo)
        except NoCutout as exc:
            rejected[exc.reason] += 1
            continue
        cut.setdefault(product, []).append((stem, photo, Box(label, found.box)))
    # Composite scenes (training and the held-out test) need cut-outs of every class, whatever its teacher.
    if len(cut) < min_products:
        why = ", ".join(f"{n} {reason}" for reason, n in rejected.most_common()) or "none rejected"
        raise DistillError(
            f"category {category!r} has {len(cut)} products whose photos cut out ({len(photos)} photos; "
            f"rejected: {why}); class {label!r} needs at least {min_products}"
        )
    products = sorted({*cut, *stems.values()})
    val = _val_products(products, seed)
    card = {
        "label": label,
        "category": category,
        "teacher": teacher,
        "photos": len(photos),
        "usable_products": len(cut),
        "rejected": dict(rejected),
        "seed": seed,
        "created_at": datetime.now(UTC).isoformat(),
        "products": stems if teacher != CATALOG_TEACHER else {s: p for p, rows in cut.items() for s, _, _ in rows},
        **(card_extra or {}),
    }
    if teacher == CATALOG_TEACHER:
        images = [
            LabelledImage(stem, photo, [box], "val" if product in val else "train")
            for product, rows in cut.items()
            for stem, photo, box in rows
        ]
        return write_label_set(LabelSet([label], images, {**card, "prompt": None}), out_dir)
    every = [(stem, photo) for stem, (_, photo) in zip(stems, photos, strict=True)]
    split_of = {stem: "val" if product in val else "train" for stem, product in stems.items()}
    return _teach_open_vocabulary(
        label, cut, every, split_of, out_dir, teacher, teacher_model, prompt, cache_dir, seed, card
    )


def _teach_open_vocabulary(
    label, cut, every, split_of, out_dir, teacher, teacher_model, prompt, cache_dir, seed, card
) -> Path:
    """The teacher boxes the class on EVERY photo of the category (lifestyle photos included, which no
    cut-out can use); the photos that cut out are the validation set its prompt variants are scored on."""
    from training.labelling import label_with_teacher
    from vision.teachers import create_teacher

    options = {"model": teacher_model} if teacher_model else {}
    model = create_teacher(teacher, cache_dir=Path(cache_dir or tempfile.gettempdir()), **options)
    model.load()  # TeacherUnavailable (offline, no local copy) before anything is written
    validation = [(photo, [box.box]) for rows in cut.values() for _, photo, box in rows]
    return label_with_teacher(
        model,
        {label: every},
        {label: prompt},
        {label: validation},
        out_dir,
        seed=seed,
        split_of=split_of,
        card_extra=card,
    )


def class_cutouts(class_dir: Path) -> tuple[str, list[CatalogCutout], Counter]:
    """(label, cut-outs, rejected reasons) of a class's label set: its photos cut out again, category = label."""
    card = read_card(class_dir)
    label = card["names"][0]
    products = card.get("products") or {}
    photos = []
    for split in ("train", "val"):
        for path in sorted((Path(class_dir) / "images" / split).glob("*.jpg")):
            with pil_open(path) as im:
                photos.append((products.get(path.stem, path.stem), label, im.convert("RGB")))
    cutouts, rejected = cutouts_from_photos(photos, cut=cut_out)
    return label, cutouts, rejected


def distractor_cutouts(photos: Sequence[tuple[str, str, Image.Image]], classes: Sequence[str]) -> list[CatalogCutout]:
    """Cut-outs of products of other categories, to paste unlabelled beside the classes."""
    others = [(p, c, im) for p, c, im in photos if c not in set(classes)]
    return cutouts_from_photos(others, cut=cut_out)[0]


def train_detector(
    class_dirs: Sequence[Path],
    distractors: Sequence[CatalogCutout],
    out_root: Path,
    *,
    config: StudentConfig,
    scenes: dict[str, int] | None = None,
    seed: int = 0,
    held_out: float = 0.3,
    progress: Callable[[int, int, float], None] | None = None,
    machine: dict | None = None,
    onnx: bool = True,
    embedder: Embedder | None = None,
    reuse: bool = False,
    background_class: bool = False,
) -> DetectorRun:
    """Scenes from every class's label set, the student trained on them, evaluated on held-out products, saved.

    With an `embedder`, a class head over it is fitted too and both students are evaluated on the same
    held-out scenes by the same rule (`attach_class_head`); the card's `serve` names the better one.
    With `reuse`, a student in `out_root` already trained on byte-identical scenes with the same
    configuration (`training_inputs_digest`) is not trained again: only its head is refitted and
    both students re-evaluated (the card keeps the first training's time and machine).
    `background_class`: the head also learns the YOLO's false boxes as "none of the classes"
    (`attach_class_head`).
    """
    if not class_dirs:
        raise DistillError("no classes to train on: add one with `vitrine detector add-class`")
    started = time.perf_counter()
    classes, cutouts, rejected, sets = [], [], Counter(), []
    for d in class_dirs:
        label, cuts, why = class_cutouts(d)
        if label in classes:
            raise DistillError(f"class {label!r} appears in two label sets")
        classes.append(label)
        cutouts += cuts
        rejected += why
        card = read_card(d)
        sets.append({k: card.get(k) for k in ("label", "category", "teacher", "prompt", "usable_products", "seed")})
    cutouts += [c for c in distractors if c.category not in classes]
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".detector-run-", dir=out_root))
    try:
        scene_dir = build_scene_set(
            cutouts,
            classes,
            work / "scenes",
            scenes=scenes or DEFAULT_SCENES,
            size=config.imgsz,
            seed=seed,
            held_out=held_out,
            rejected=rejected,
            card_extra={"label_sets": sets},
        )
        # An open-vocabulary teacher's boxes on the class's own photos train beside the scenes (not the test).
        taught = [d for d in class_dirs if read_card(d).get("teacher") != CATALOG_TEACHER]
        data = merge_label_sets([scene_dir, *taught], work / "data", names=classes) if taught else scene_dir
        inputs = training_inputs_digest(data, config)
        tested = _files_digest(scene_dir, ["test"])  # a reused student is evaluated on its own stored test scenes
        trained = _trained_on(out_root, inputs, tested) if reuse else None
        if trained is not None and embedder is not None:  # these exact inputs were trained on: refit the head only
            shutil.rmtree(work, ignore_errors=True)
            card = attach_class_head(trained, embedder, seed=seed, background_class=background_class)
            return DetectorRun(card["key"], trained, card, reused=True)
        result = train_student(data / "data.yaml", work / "train", config, progress)
        held = evaluate_student(result.weights, scene_dir / "data.yaml", "test", imgsz=config.imgsz)
        key = f"detector-{Path(config.architecture).stem}@{_digest(result.weights)}"
        final = out_root / key
        if final.exists():  # the same weights again (same data, seed and schedule): keep the first copy
            card = _adopt_test_scenes(final, scene_dir, tested, held, classes)  # evaluated on the scenes asked for
            if embedder is not None:
                card = attach_class_head(final, embedder, seed=seed, background_class=background_class)
            return DetectorRun(key, final, card)
        final_tmp = work / "artefact"
        final_tmp.mkdir()
        shutil.copyfile(result.weights, final_tmp / "student.pt")
        onnx_path = export_onnx(final_tmp / "student.pt", imgsz=config.imgsz) if onnx else None
        shutil.move(str(scene_dir), final_tmp / "scenes")  # the held-out test scenes, for `vitrine detector eval`
        write_data_yaml(final_tmp / "scenes", classes, root=final / "scenes")  # where they will be after the rename
        card = {
            "name": "detector",
            "key": key,
            "classes": classes,
            "teacher_label_sets": sets,
            "student": result.to_dict() | {"weights": "student.pt"},
            "onnx": onnx_path.name if onnx_path else None,
            "train_images": {
                "scenes": len(list((final_tmp / "scenes" / "images" / "train").glob("*.jpg"))),
                "teacher_labelled": sum(len(list((d / "images" / "train").glob("*.jpg"))) for d in taught),
            },
            "heldout": held,
            "training_inputs": inputs,
            "test_scenes": tested,
            "scenes": _scene_card(final_tmp / "scenes"),
            "seconds": round(time.perf_counter() - started, 1),
            "machine": machine or {},
            "seed": seed,
            "created_at": datetime.now(UTC).isoformat(),
        }
        (final_tmp / "card.json").write_text(json.dumps(card, indent=2, default=str) + "\n")
        if embedder is not None:
            card = attach_class_head(final_tmp, embedder, seed=seed, background_class=background_class)
        final_tmp.rename(final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return DetectorRun(key, final, card)


def attach_class_head(artefact: Path, embedder: Embedder, *, seed: int = 0, background_class: bool = False) -> dict:
    """Fit the class head on an artefact's training scenes, evaluate both students on its test scenes (card).

    With `background_class`, the YOLO's own false boxes on the training scenes are a background class.
    On the demo catalog that named boxes better (held-out mAP50 0.288 -> 0.316) but, since most of those
    false boxes are other categories' products, shop the look then located fewer products of other
    categories (hit rate 0.587 -> 0.468): it is off by default (docs/detector.md).
    """
    from training.hybrid import HEAD_FILE, HybridStudent, calibrate_min_score, evaluate_detector, fit_class_head
    from training.student import student_detector

    artefact = Path(artefact)
    card = json.loads((artefact / "card.json").read_text())
    imgsz = int(card["student"]["config"]["imgsz"])
    scenes = artefact / "scenes"
    configured = os.environ.get("YOLO_CONFIG_DIR")  # where this process's ultralytics is configured, if it is
    cache = Path(configured).parent if configured else Path(tempfile.gettempdir()) / "vitrine-models"

    def boxes():  # every box down to 0.001, as for mAP; serving filters by VITRINE_DETECT_MIN_SCORE
        return student_detector(artefact / "student.pt", cache_dir=cache, imgsz=imgsz, conf=0.001)

    started = time.perf_counter()
    negatives = boxes() if background_class else None
    head = fit_class_head(embedder, scenes, splits=("train", "val"), seed=seed, negatives=negatives)
    head.save(artefact / HEAD_FILE)
    fit_s = time.perf_counter() - started

    same_rule = {
        "yolo": evaluate_detector(boxes(), scenes, "test"),
        "yolo+head": evaluate_detector(HybridStudent(boxes(), embedder, head), scenes, "test"),
    }
    card["heldout_same_rule"] = same_rule
    # The COCO protocol scores a box for more than one class; serving names it once (the figures above).
    card["heldout_labels_per_box"] = {
        "labels_per_box": MULTI_LABELS,
        "yolo+head": evaluate_detector(
            HybridStudent(boxes(), embedder, head, labels_per_box=MULTI_LABELS), scenes, "test"
        ),
    }
    # The operating threshold of each student, on the val scenes (training products): serving uses it.
    card["serve_min_score"] = {
        "yolo": calibrate_min_score(boxes(), scenes, "val"),
        "yolo+head": calibrate_min_score(HybridStudent(boxes(), embedder, head), scenes, "val"),
    }
    card["class_head"] = {
        "file": HEAD_FILE, "embedder": head.embedder_key, "fit_seconds": round(fit_s, 1), "background": head.background,
    }  # fmt: skip
    card["serve"] = max(same_rule, key=lambda k: same_rule[k]["map50"])
    (artefact / "card.json").write_text(json.dumps(card, indent=2, default=str) + "\n")
    return card


def training_inputs_digest(data_root: Path, config: StudentConfig) -> str:
    """What a student's training read: the train/val images and labels (bytes) and its configuration.

    The base weights count by content, not path, and the device by what it resolves to.
    """
    spec = config.to_dict() | {
        "base": _digest(config.base) if config.base else None,
        "device": config.resolved_device(),
    }
    return _files_digest(data_root, ["train", "val"], json.dumps(spec, sort_keys=True))


def _files_digest(data_root: Path, splits: Sequence[str], prefix: str = "") -> str:
    """sha256 of a label set's images and labels (names and bytes) in the given splits."""
    h = hashlib.sha256(prefix.encode())
    for split in splits:
        for kind in ("images", "labels"):
            for path in sorted((Path(data_root) / kind / split).glob("*")):
                h.update(f"{kind}/{split}/{path.name}".encode())
                h.update(path.read_bytes())
    return h.hexdigest()[:24]


def _scene_card(scene_dir: Path) -> dict:
    """A scene set's card for the detector's card: without the product ids (long, and in its own card)."""
    card = read_card(scene_dir)
    card.pop("products", None)
    return card


def _adopt_test_scenes(artefact: Path, scene_dir: Path, tested: str, held: dict, classes: list[str]) -> dict:
    """The card of an artefact whose weights were trained again: when this run's test scenes are not the
    ones it stores, they replace them (with the YOLO's held-out figures on them), so it is evaluated on
    what was asked for, not on an earlier run's scenes."""
    card = json.loads((artefact / "card.json").read_text())
    if card.get("test_scenes") == tested:
        return card
    stored = artefact / "scenes"
    shutil.rmtree(stored, ignore_errors=True)
    shutil.move(str(scene_dir), stored)
    write_data_yaml(stored, classes, root=stored)
    card |= {"heldout": held, "test_scenes": tested, "scenes": _scene_card(stored)}
    tmp = artefact / "card.json.tmp"
    tmp.write_text(json.dumps(card, indent=2, default=str) + "\n")
    tmp.replace(artefact / "card.json")
    return card


def _trained_on(out_root: Path, inputs: str, tested: str) -> Path | None:
    """An artefact in out_root trained on exactly these inputs, with the same test scenes, if there is one."""
    for card_path in sorted(Path(out_root).glob("*/card.json")):
        card = json.loads(card_path.read_text())
        if card.get("training_inputs") == inputs and card.get("test_scenes") == tested:
            return card_path.parent
    return None


def _digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def _stem(product: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", product)[:80] or "product"


def _val_products(products: list[str], seed: int) -> set[str]:
    rng = np.random.default_rng(seed)
    n = max(1, round(VAL_SHARE * len(products)))
    return {products[i] for i in rng.permutation(len(products))[:n]}
