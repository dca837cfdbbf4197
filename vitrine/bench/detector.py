"""`vitrine bench detector`: teach a student the demo catalog's classes with the catalog teacher, offline.

1. The demo catalog (built if missing): N categories become classes, one more is added later, the
   rest are distractors (pasted unlabelled beside the classes).
2. Each class is labelled alone by the catalog teacher (cut-outs of its own photos).
3. The student trains on composite scenes of 70 % of each category's products and is evaluated on
   scenes built only from the other 30 % (products it never saw): AP50 per class and mAP50.
4. With --add-class, the next category is taught and the student fine-tuned on old + new classes;
   the old classes' AP50 before and after are compared (held-out products of the same split).
5. Inference speed on 2 cores: the student at 320 and 640 px beside the whole-image detector.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

from core.machine import machine_info

log = logging.getLogger(__name__)


def run_detector_bench(
    *,
    data_dir: Path,
    classes: int = 8,
    add_class: bool = True,
    epochs: int = 30,
    add_epochs: int | None = None,
    imgsz: int = 320,
    train_scenes: int = 600,
    test_scenes: int = 200,
    seed: int = 0,
    device: str = "auto",
    speed_images: int = 20,
    work_dir: Path | None = None,
    catalog_dir: Path | None = None,
    reuse: bool = False,
    background_class: bool = False,
    embedder=None,
) -> dict:
    """Run the whole offline pipeline; returns the figures as one JSON-able dict.

    `embedder`: what the class head is fitted over (default the pretrained EfficientNet-Lite0, the one
    pretrained model installable offline; the configured one, e.g. CLIP with local weights, where it is
    stronger). With `reuse`, only the heads are fitted again: students trained once serve every embedder.
    """
    from training.distill import distractor_cutouts, teach_class, train_detector
    from training.scenes import demo_catalog_photos
    from training.student import StudentConfig, inference_speed
    from vision.detector import WholeImageDetector
    from vision.embedder import create_embedder
    from vitrine.bench.training import device_info
    from vitrine.demo_catalog import build_demo_catalog

    started = time.perf_counter()
    if catalog_dir is None:  # the demo's own catalog (built once, then reused)
        catalog_dir = build_demo_catalog(data_dir / "demo" / "catalog", data_dir=data_dir, seed=0).out_dir
    photos = demo_catalog_photos(catalog_dir, by_design=True)  # a drawing's colour variants: one side of the split
    categories = sorted({c for _, c, _ in photos}, key=lambda c: (-sum(1 for _, x, _ in photos if x == c), c))
    if len(categories) < classes + (1 if add_class else 0) + 1:
        raise ValueError(f"the demo catalog has {len(categories)} categories; --classes {classes} needs more")
    chosen, extra = categories[:classes], categories[classes] if add_class else None
    work = Path(work_dir or tempfile.mkdtemp(prefix="vitrine-bench-detector-"))
    class_dirs = {}
    for category in chosen + ([extra] if extra else []):
        own = [(p, im) for p, c, im in photos if c == category]
        class_dir = work / "classes" / _slug(category)
        if reuse and (class_dir / "card.json").is_file():  # labelled by an earlier run in this work dir
            class_dirs[category] = class_dir
            continue
        class_dirs[category] = teach_class(category, category, own, class_dir, seed=seed)
    distractors = distractor_cutouts(photos, [*chosen, *([extra] if extra else [])])
    scenes = {"train": train_scenes, "val": max(10, train_scenes // 6), "test": test_scenes}
    config = StudentConfig(epochs=epochs, imgsz=imgsz, seed=seed, device=device)
    if embedder is None:
        embedder = create_embedder("efficientnet-lite0", cache_dir=data_dir / "models")
    first = train_detector(
        [class_dirs[c] for c in chosen], distractors, work / "students", config=config, scenes=scenes, seed=seed,
        machine=device_info(), embedder=embedder, reuse=reuse, background_class=background_class,
    )  # fmt: skip
    result = {
        "settings": {
            "classes": chosen,
            "added_class": extra,
            "epochs": epochs,
            "add_epochs": add_epochs or epochs,
            "imgsz": imgsz,
            "scenes": scenes,
            "seed": seed,
            "device": config.resolved_device(),
            "teacher": "catalog",
            "architecture": config.architecture,
            "held_out_products": 0.3,
            "split_by": "design (a drawing's colour variants are one product)",
            "class_head_background": background_class,
            "class_head_embedder": embedder.model_key,  # loaded by training: its key names its weights
            "catalog": str(catalog_dir),
        },
        "first": _summary(first),
    }
    if extra:
        added_config = StudentConfig(
            epochs=add_epochs or epochs, imgsz=imgsz, seed=seed, device=device, base=first.weights
        )
        second = train_detector(
            [class_dirs[c] for c in [*chosen, extra]], distractors, work / "students", config=added_config,
            scenes=scenes, seed=seed, machine=device_info(), embedder=embedder, reuse=reuse,
            background_class=background_class,
        )  # fmt: skip
        result["added"] = _summary(second)
        result["forgetting"] = {}
        for name in result["first"]["students"]:
            before = [result["first"]["students"][name]["per_class"][c] for c in chosen]
            after = [result["added"]["students"][name]["per_class"][c] for c in chosen]
            result["forgetting"][name] = {
                "old_classes_map50_before": _mean(before),
                "old_classes_map50_after": _mean(after),
                "change": round(_mean(after) - _mean(before), 4),
                "new_class_ap50": result["added"]["students"][name]["per_class"][extra],
            }
    # Speed on the held-out scene images (the same ones for every detector), one image per call.
    images = _scene_images(first.path / "scenes", speed_images)
    cache = data_dir / "models"
    result["speed"] = {
        "images": len(images),
        "student_320_img_s": round(inference_speed(first.weights, images, 320, cache_dir=cache), 1),
        "student_640_img_s": round(inference_speed(first.weights, images, 640, cache_dir=cache), 1),
        "whole_image_img_s": round(inference_speed(WholeImageDetector(), images), 1),
    }
    from training.hybrid import HEAD_FILE, ClassHead, HybridStudent
    from training.student import student_detector

    hybrid = HybridStudent(
        student_detector(first.weights, cache_dir=cache, imgsz=320), embedder, ClassHead.load(first.path / HEAD_FILE)
    )
    result["speed"]["student_head_320_img_s"] = round(inference_speed(hybrid, images), 1)
    result["work_dir"] = str(work)
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["machine"] = machine_info()
    return result


def _summary(run) -> dict:
    held, student = run.card["heldout"], run.card["student"]
    same = run.card.get("heldout_same_rule") or {}
    return {
        "key": run.key,
        "map50": held["map50"],
        "map50_95": held["map50_95"],
        "per_class": {c: row["ap50"] for c, row in held["per_class"].items()},
        # Both students on the same scenes by one rule (COCO 101-point AP50), and the one served.
        "students": {
            name: {"map50": r["map50"], "per_class": {c: row["ap50"] for c, row in r["per_class"].items()}}
            for name, r in {**same, **_scored_per_class(run.card)}.items()
        },
        "serve": run.card.get("serve", "yolo"),
        "test_images": held["images"],
        "train_seconds": round(student["seconds"], 1),
        "epochs_run": student["epochs_run"],
        "device": student["device"],
        "fine_tuned_from": student["config"].get("base"),
        "transfer": student.get("transfer") or {},
        "pipeline_seconds": run.card["seconds"],
        "student_reused": run.reused,
    }


def _scored_per_class(card: dict) -> dict:
    """The hybrid scored for its k most probable classes a box (COCO protocol), as `yolo+head top-k`."""
    multi = card.get("heldout_labels_per_box") or {}
    return {f"yolo+head top-{multi['labels_per_box']}": multi["yolo+head"]} if multi else {}


def _scene_images(scenes: Path, n: int):
    from vision.image import pil_open

    out = []
    for path in sorted((scenes / "images" / "test").glob("*.jpg"))[:n]:
        with pil_open(path) as im:
            out.append(im.convert("RGB"))
    return out


def _mean(values) -> float:
    values = [v for v in values if v is not None]
    return round(sum(values) / len(values), 4) if values else 0.0


def _slug(label: str) -> str:
    from training.distill import class_slug

    return class_slug(label)


def format_table(r: dict) -> str:
    """The figures as a readable table."""
    s = r["settings"]
    added = "added" in r
    lines = [
        f"student detector taught by the catalog teacher: {len(s['classes'])} classes, "
        f"{s['architecture']} at {s['imgsz']} px, {s['epochs']} epochs on {s['device']}, seed {s['seed']}",
        f"scenes train/val/test {s['scenes']['train']}/{s['scenes']['val']}/{s['scenes']['test']}; "
        f"test scenes hold only products never trained on ({s['held_out_products']:.0%} of each category, "
        f"split by {s.get('split_by', 'product')})",
        f"class head over {s.get('class_head_embedder', 'the pretrained embedder')}: "
        f"{'with' if s.get('class_head_background') else 'no'} background class"
        + (
            "; students reused from an earlier run in the work dir (its train times)"
            if r["first"].get("student_reused")
            else ""
        ),
        "AP50 on the held-out test scenes (COCO 101-point); yolo = the YOLO student alone, "
        "yolo+head = its boxes named by the class head",
        "",
    ]
    first = r["first"]["students"]
    after = r["added"]["students"] if added else {}
    kinds = list(first)
    width = {k: max(6, len(k)) for k in kinds}
    lines.append(
        f"{'class':<22} " + " ".join(f"{k:>{width[k]}}" for k in kinds)
        + (" | after adding: " + " ".join(f"{k:>{width[k]}}" for k in kinds) if added else "")
    )  # fmt: skip
    names = list(first.get("yolo", {}).get("per_class", {}))

    def row(label: str, before: list, later: list) -> str:
        line = f"{label:<22} " + " ".join(f"{_f(v):>{width[k]}}" for k, v in zip(kinds, before, strict=True))
        if added:
            line += f" | {'':>13} " + " ".join(f"{_f(v):>{width[k]}}" for k, v in zip(kinds, later, strict=True))
        return line

    def ap(students: dict, c: str) -> list:
        return [students[k]["per_class"].get(c) for k in kinds] if students else []

    for c in names:
        lines.append(row(c, ap(first, c), ap(after, c)))
    if added:
        lines.append(row(f"{s['added_class']} (new)", [None] * len(kinds), ap(after, s["added_class"])))
    lines.append(row("mAP50", [first[k]["map50"] for k in kinds], [after[k]["map50"] for k in kinds] if added else []))
    if any(k.startswith("yolo+head top-") for k in kinds):
        lines.append(
            "yolo+head top-k: each box scored for its k most probable classes (the COCO protocol, as "
            "ultralytics' val); serving names a box once (yolo+head)"
        )
    lines.append(
        f"(ultralytics' own val of the YOLO student: mAP50 {_f(r['first']['map50'])}"
        + (f", after adding {_f(r['added']['map50'])})" if added else ")")
        + f"; served: {r['first']['serve']}"
    )
    lines.append(
        f"train time: {r['first']['train_seconds']:.0f} s ({r['first']['epochs_run']} epochs)"
        + (
            f"; adding a class: {r['added']['train_seconds']:.0f} s ({r['added']['epochs_run']} epochs)"
            if added
            else ""
        )
    )
    for name, f in (r.get("forgetting") or {}).items():
        lines.append(
            f"{name}: old classes' mAP50 {f['old_classes_map50_before']:.3f} -> {f['old_classes_map50_after']:.3f} "
            f"(change {f['change']:+.3f}; target: within 0.05), new class {_f(f['new_class_ap50'])}"
        )
    sp = r["speed"]
    lines.append(
        f"inference, one image per call: yolo {sp['student_320_img_s']} img/s at 320 px, {sp['student_640_img_s']} "
        f"at 640; yolo+head {sp['student_head_320_img_s']} at 320; whole-image detector {sp['whole_image_img_s']}"
    )
    m = r["machine"]
    lines.append(
        f"machine: {m.get('cpu')}, {m.get('cores')} cores, load {m.get('load_average_1m')}, torch {m.get('torch')}, "
        f"ultralytics {m.get('ultralytics')}; whole run {r['seconds']:.0f} s"
    )
    lines.append(f"label sets, scenes and students kept in {r['work_dir']} (students/<key>/student.pt)")
    return "\n".join(lines)


def _f(v) -> str:
    return "-" if v is None else f"{v:.3f}"
