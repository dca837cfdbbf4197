"""Label sets: images with class boxes, saved in the YOLO layout with a card saying where they came from.

A label set is what a teacher produced for one class (or a scene set for several): images, one box
list per image, the class names, and a card (teacher, prompt, source category, seed, counts). On disk::

    DIR/card.json                 # where the labels came from (JSON object, always has "names")
    DIR/data.yaml                 # ultralytics' dataset file: path, the splits, names
    DIR/images/<split>/<stem>.jpg
    DIR/labels/<split>/<stem>.txt # one "class cx cy w h" line per box, normalised to 0-1

`write_label_set` writes into a sibling temporary folder and renames it into place, so a crash
leaves no half-written set under the final name, and a name already present is refused.
`to_coco` gives the same boxes as a COCO JSON object for tools that want that format.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from vision.image import pil_open

SPLITS = ("train", "val", "test")
CARD = "card.json"


class LabelSetError(ValueError):
    """A label set that cannot be written or read as asked; the message says why."""


@dataclass(frozen=True)
class Box:
    """One labelled box in pixels of its image."""

    label: str
    box: tuple[float, float, float, float]  # x0, y0, x1, y1
    score: float = 1.0


@dataclass
class LabelledImage:
    """An image, its boxes, and the split it belongs to."""

    stem: str  # file name without extension, unique within the set
    image: Image.Image
    boxes: list[Box]
    split: str = "train"


@dataclass
class LabelSet:
    """Images with boxes plus the card; `names` fixes the class ids (index = id)."""

    names: list[str]
    images: list[LabelledImage] = field(default_factory=list)
    card: dict = field(default_factory=dict)

    def counts(self) -> dict[str, dict[str, int]]:
        """Per split: images and boxes."""
        out: dict[str, dict[str, int]] = {}
        for item in self.images:
            row = out.setdefault(item.split, {"images": 0, "boxes": 0})
            row["images"] += 1
            row["boxes"] += len(item.boxes)
        return out


def yolo_line(box: Box, class_id: int, width: int, height: int) -> str:
    """A box as one YOLO label line: class id, centre x/y and size, normalised, clipped to the image."""
    x0, y0, x1, y1 = box.box
    x0, x1 = min(max(0.0, min(x0, x1)), float(width)), max(0.0, min(float(width), max(x0, x1)))
    y0, y1 = min(max(0.0, min(y0, y1)), float(height)), max(0.0, min(float(height), max(y0, y1)))
    cx, cy = (x0 + x1) / 2 / width, (y0 + y1) / 2 / height
    w, h = (x1 - x0) / width, (y1 - y0) / height
    return f"{class_id} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}"


def write_label_set(label_set: LabelSet, out_dir: Path, *, quality: int = 90) -> Path:
    """Write the set in the YOLO layout under out_dir (refused if it exists); returns out_dir."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise LabelSetError(f"{out_dir} already exists; a label set is never overwritten")
    names = list(label_set.names)
    if not label_set.images:
        raise LabelSetError("a label set needs at least one image")
    if not names or len(set(names)) != len(names):
        raise LabelSetError(f"class names must be non-empty and distinct, got {names}")
    ids = {name: i for i, name in enumerate(names)}
    stems = [item.stem for item in label_set.images]
    if len(set(stems)) != len(stems):
        raise LabelSetError("image stems must be unique within a label set")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        for item in label_set.images:
            if item.split not in SPLITS:
                raise LabelSetError(f"unknown split {item.split!r} for {item.stem}; use one of {SPLITS}")
            unknown = {b.label for b in item.boxes} - ids.keys()
            if unknown:
                raise LabelSetError(f"{item.stem}: boxes with labels not in names: {sorted(unknown)}")
            (tmp / "images" / item.split).mkdir(parents=True, exist_ok=True)
            (tmp / "labels" / item.split).mkdir(parents=True, exist_ok=True)
            item.image.convert("RGB").save(tmp / "images" / item.split / f"{item.stem}.jpg", quality=quality)
            lines = [yolo_line(b, ids[b.label], item.image.width, item.image.height) for b in item.boxes]
            (tmp / "labels" / item.split / f"{item.stem}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
        card = {**label_set.card, "names": names, "counts": label_set.counts(), "format": "yolo"}
        (tmp / CARD).write_text(json.dumps(card, indent=2, sort_keys=True, default=str) + "\n")
        write_data_yaml(tmp, names, root=out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def write_data_yaml(directory: Path, names: Sequence[str], *, root: Path | None = None) -> Path:
    """ultralytics' data.yaml for a folder in the layout above (splits that have images only)."""
    directory = Path(directory)
    root = Path(root or directory).resolve()
    lines = [f"path: {json.dumps(str(root))}"]
    for split in SPLITS:
        if (directory / "images" / split).is_dir():
            lines.append(f"{split}: images/{split}")
    lines.append("names:")
    lines += [f"  {i}: {json.dumps(name)}" for i, name in enumerate(names)]
    path = directory / "data.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def read_card(directory: Path) -> dict:
    """The card of a written label set; LabelSetError when the folder is not one."""
    path = Path(directory) / CARD
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LabelSetError(f"{directory} is not a label set (no readable {CARD}: {exc})") from None
    if not isinstance(card, dict) or not isinstance(card.get("names"), list):
        raise LabelSetError(f"{path} has no class names")
    return card


def read_boxes(directory: Path, split: str) -> dict[str, list[tuple[int, tuple[float, float, float, float]]]]:
    """Stem -> [(class id, normalised cx, cy, w, h)] for one split of a written set."""
    out: dict[str, list[tuple[int, tuple[float, float, float, float]]]] = {}
    for txt in sorted((Path(directory) / "labels" / split).glob("*.txt")):
        rows = []
        for line in txt.read_text().split("\n"):
            if line.strip():
                cls, *coords = line.split()
                rows.append((int(cls), tuple(float(v) for v in coords)))
        out[txt.stem] = rows
    return out


def merge_label_sets(sources: Iterable[Path], out_dir: Path, *, names: Sequence[str] | None = None) -> Path:
    """One training folder from several written sets, class ids remapped onto `names` (default: in order).

    Images are hard-linked (copied where links fail), so merging many sets costs little disk.
    """
    sources = [Path(s) for s in sources]
    cards = [read_card(s) for s in sources]
    merged: list[str] = list(names or [])
    for card in cards:
        merged += [n for n in card["names"] if n not in merged]
    ids = {n: i for i, n in enumerate(merged)}
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise LabelSetError(f"{out_dir} already exists; merging never overwrites")
    for k, (src, card) in enumerate(zip(sources, cards, strict=True)):
        remap = {i: ids[n] for i, n in enumerate(card["names"])}
        for split in SPLITS:
            for image in sorted((src / "images" / split).glob("*.jpg")):
                stem = f"{k}-{image.stem}"
                target = out_dir / "images" / split / f"{stem}.jpg"
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(image, target)
                except OSError:
                    shutil.copyfile(image, target)
                label = src / "labels" / split / f"{image.stem}.txt"
                lines = []
                for line in label.read_text().split("\n") if label.exists() else []:
                    if line.strip():
                        cls, rest = line.split(maxsplit=1)
                        lines.append(f"{remap[int(cls)]} {rest}")
                (out_dir / "labels" / split).mkdir(parents=True, exist_ok=True)
                (out_dir / "labels" / split / f"{stem}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
    write_data_yaml(out_dir, merged)
    (out_dir / CARD).write_text(
        json.dumps({"names": merged, "merged_from": [str(s) for s in sources]}, indent=2) + "\n"
    )
    return out_dir


def to_coco(directory: Path, split: str) -> dict:
    """The boxes of one split of a written set as a COCO detection JSON object (pixels, xywh)."""
    directory = Path(directory)
    names = read_card(directory)["names"]
    coco: dict = {
        "images": [],
        "annotations": [],
        "categories": [{"id": i, "name": n} for i, n in enumerate(names)],
    }
    boxes = read_boxes(directory, split)
    for image_id, (stem, rows) in enumerate(sorted(boxes.items())):
        path = directory / "images" / split / f"{stem}.jpg"
        with pil_open(path) as im:
            width, height = im.size
        file_name = f"images/{split}/{stem}.jpg"
        coco["images"].append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        for cls, (cx, cy, w, h) in rows:
            coco["annotations"].append(
                {
                    "id": len(coco["annotations"]),
                    "image_id": image_id,
                    "category_id": cls,
                    "bbox": [(cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height],
                    "area": w * width * h * height,
                    "iscrowd": 0,
                }
            )
    return coco
