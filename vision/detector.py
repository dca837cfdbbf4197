"""Detectors: an image -> boxes of the items in it, behind one interface and a name registry."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops

from vision.model import LazyModel, UnknownBackend

log = logging.getLogger(__name__)

# name -> "module:Class", imported on demand so that the default never imports ultralytics.
DETECTORS: dict[str, str] = {
    "whole-image": "vision.detector:WholeImageDetector",
    "yolo": "vision.yolo:YoloDetector",
}

KINDS = ("whole", "item", "context")
WHOLE_LABEL = "image"


@dataclass(frozen=True)
class Detection:
    """One box in pixels of the loaded image; kind is 'whole', 'item' or 'context' (e.g. a person)."""

    box: tuple[float, float, float, float]
    label: str
    score: float
    kind: str = "item"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {self.kind!r}")

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)

    def to_dict(self) -> dict:
        """Plain JSON-able form (box rounded to 0.1 px)."""
        return {
            "box": [round(v, 1) for v in self.box],
            "label": self.label,
            "score": round(self.score, 4),
            "kind": self.kind,
        }


class Detector(LazyModel):
    """Base class: `detect(images)` loads on first use, then returns one list of boxes per image."""

    name: str = ""
    # A detector with an operating threshold of its own (a student calibrated on its validation scenes) sets it;
    # None: the item policy's VITRINE_DETECT_MIN_SCORE applies.
    min_score: float | None = None

    def detect(self, images: Sequence[Image.Image]) -> list[list[Detection]]:
        """Boxes found in each image (a list per image, in input order)."""
        self.load()
        if len(images) == 0:
            return []
        return self._detect(list(images))

    def _detect(self, images: list[Image.Image]) -> list[list[Detection]]:
        raise NotImplementedError


class WholeImageDetector(Detector):
    """The whole image is one item, trimmed to the product on a plain (studio) background."""

    name = "whole-image"

    def __init__(self, *, cache_dir: Path | None = None, trim: bool = True, tolerance: int = 24, margin: float = 0.02):
        super().__init__()
        self.trim = trim
        self.tolerance = tolerance
        self.margin = margin

    def describe(self) -> str:
        return f"{self.name} (no weights; trim to product on plain background: {self.trim})"

    def _load(self) -> None:
        pass  # nothing to load

    def _detect(self, images: list[Image.Image]) -> list[list[Detection]]:
        return [
            [whole_image_detection(im, trim=self.trim, tolerance=self.tolerance, margin=self.margin)] for im in images
        ]


def whole_image_detection(
    image: Image.Image, *, trim: bool = True, tolerance: int = 24, margin: float = 0.02
) -> Detection:
    """The 'whole' item of an image: its product area on a plain background, else the full frame."""
    box = trim_box(image, tolerance=tolerance, margin=margin) if trim else None
    return Detection(
        box=box or (0.0, 0.0, float(image.width), float(image.height)), label=WHOLE_LABEL, score=1.0, kind="whole"
    )


# Images larger than this are box-reduced by an integer factor first (a 2,000 px photo by 3):
# the bounding area of a studio shot does not need full resolution. Smaller ones are trimmed at
# full resolution, so the box is pixel-exact where a few pixels are a visible share of the image.
_TRIM_SIDE = 512
# The border must be this uniform to count as a plain background (else: a lifestyle photo).
_PLAIN_BORDER_SHARE = 0.9
# A row/column is product only if this share of it differs from the background (JPEG noise).
_MIN_LINE_SHARE = 0.01


def trim_box(
    image: Image.Image, *, tolerance: int = 24, margin: float = 0.02
) -> tuple[float, float, float, float] | None:
    """Bounding box of what differs from a plain border colour, or None when there is no plain border.

    The per-pixel work runs in Pillow's C operations (reduce, difference, lighter), several times
    faster than the same steps in numpy after a bilinear resize: the ingest worker trims every image,
    on the cores that embed (figures in docs/ingestion.md).
    """
    w, h = image.size
    if w < 3 or h < 3:
        return None
    thumb = image if image.mode == "RGB" else image.convert("RGB")
    factor = max(w, h) // _TRIM_SIDE
    if factor > 1:
        thumb = thumb.reduce(factor)
    tw, th = thumb.size
    arr = np.asarray(thumb)
    border = np.concatenate([arr[0], arr[-1], arr[1:-1, 0], arr[1:-1, -1]]).astype(np.int16)
    background = np.median(border, axis=0)
    if (np.abs(border - background).max(axis=1) <= tolerance).mean() < _PLAIN_BORDER_SHARE:
        return None
    plain = Image.new("RGB", thumb.size, tuple(int(round(c)) for c in background))
    red, green, blue = ImageChops.difference(thumb, plain).split()
    fg = np.asarray(ImageChops.lighter(ImageChops.lighter(red, green), blue)) > tolerance
    rows = np.flatnonzero(np.count_nonzero(fg, axis=1) > max(1, _MIN_LINE_SHARE * tw))
    cols = np.flatnonzero(np.count_nonzero(fg, axis=0) > max(1, _MIN_LINE_SHARE * th))
    if rows.size == 0 or cols.size == 0:
        return None  # a blank image: nothing to trim to
    sx, sy = w / tw, h / th
    pad_x, pad_y = margin * w, margin * h
    x0 = max(0.0, cols[0] * sx - pad_x)
    y0 = max(0.0, rows[0] * sy - pad_y)
    x1 = min(float(w), (cols[-1] + 1) * sx + pad_x)
    y1 = min(float(h), (rows[-1] + 1) * sy + pad_y)
    return (x0, y0, x1, y1)


def create_detector(name: str, *, cache_dir: Path, **options) -> Detector:
    """Build (without loading) the detector registered under `name`."""
    target = DETECTORS.get(name)
    if target is None:
        raise UnknownBackend(f"unknown detector {name!r}; choose one of {', '.join(sorted(DETECTORS))}")
    module_name, cls_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(cache_dir=cache_dir, **options)
