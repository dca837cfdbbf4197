"""The item policy: which boxes of an image become items, and their crops."""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image

from vision.detector import WHOLE_LABEL, Detection

# A box thinner than this (pixels) is a detector artefact, whatever its score.
MIN_SIDE_PX = 4


@dataclass(frozen=True)
class ItemCrop:
    """One item of an image: its detection and the cropped pixels to embed."""

    detection: Detection
    crop: Image.Image


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def select_detections(
    width: int,
    height: int,
    detections: list[Detection],
    *,
    min_score: float = 0.25,
    min_area: float = 0.01,
    max_items: int = 8,
    iou_threshold: float = 0.7,
) -> list[Detection]:
    """Apply the policy: the whole image first, then items, then context, filtered, de-duplicated, capped."""
    if max_items < 1:
        raise ValueError("max_items must be >= 1 (the whole-image item is always kept)")
    image_area = float(width * height)
    wholes = [d for d in detections if d.kind == "whole"]
    whole = _clip(max(wholes, key=lambda d: d.area), width, height) if wholes else None
    if whole is None:  # detectors that only return objects still get the whole-image item
        whole = Detection((0.0, 0.0, float(width), float(height)), WHOLE_LABEL, 1.0, "whole")
    candidates = []
    for det in detections:
        if det.kind == "whole":
            continue
        det = _clip(det, width, height)
        if det is None or det.score < min_score or det.area < min_area * image_area:
            continue
        candidates.append(det)
    # Products before context boxes, then by confidence; stable, so equal scores keep detector order.
    candidates.sort(key=lambda d: (d.kind != "item", -d.score))
    kept = [whole]
    for det in candidates:
        if len(kept) >= max_items:
            break
        # Class-agnostic: 'handbag' and 'suitcase' on one bag are one item; a box that is the
        # whole image again adds nothing either.
        if all(iou(det.box, k.box) <= iou_threshold for k in kept):
            kept.append(det)
    return kept


def extract_items(
    image: Image.Image,
    detections: list[Detection],
    *,
    min_score: float = 0.25,
    min_area: float = 0.01,
    max_items: int = 8,
    iou_threshold: float = 0.7,
) -> list[ItemCrop]:
    """The items of an image (whole image first) with their crops, after the policy."""
    selected = select_detections(
        image.width,
        image.height,
        detections,
        min_score=min_score,
        min_area=min_area,
        max_items=max_items,
        iou_threshold=iou_threshold,
    )
    return [ItemCrop(detection=d, crop=crop_box(image, d.box)) for d in selected]


def crop_box(image: Image.Image, box: tuple[float, float, float, float]) -> Image.Image:
    """The pixels of a box, widened outward to whole pixels (a full-frame box returns a copy)."""
    x0, y0 = max(0, math.floor(box[0])), max(0, math.floor(box[1]))
    x1, y1 = min(image.width, math.ceil(box[2])), min(image.height, math.ceil(box[3]))
    return image.crop((x0, y0, x1, y1))


def _clip(det: Detection, width: int, height: int) -> Detection | None:
    x0, y0, x1, y1 = det.box
    box = (min(max(x0, 0.0), width), min(max(y0, 0.0), height), min(max(x1, 0.0), width), min(max(y1, 0.0), height))
    if box[2] - box[0] < min(MIN_SIDE_PX, width) or box[3] - box[1] < min(MIN_SIDE_PX, height):
        return None
    if box == det.box:
        return det
    return Detection(box=box, label=det.label, score=det.score, kind=det.kind)
