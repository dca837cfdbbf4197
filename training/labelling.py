"""Label a retailer's new classes with a teacher, one class at a time, into one label set with its card.

The published teacher -> student recipe (autodistill) found that a zero-shot teacher given several
classes at once duplicates labels (one object gets every class) and that results hinge on the prompt
wording. So each class is labelled on its own images with its own prompt, the prompt is the best of
a few variants scored (AP50) on images whose boxes are known, and boxes that several classes put on
one object are de-duplicated before the set is written (training.labelsets, atomic).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.ops import batched_nms, box_iou

from training.labelsets import SPLITS, Box, LabelledImage, LabelSet, LabelSetError, write_label_set
from vision.detector import Detection
from vision.teachers import Teacher

log = logging.getLogger(__name__)

XYXY = tuple[float, float, float, float]
# One validation image and the true boxes of the class in it.
ValidationImage = tuple[Image.Image, list[XYXY]]

_VARIANTS = ("{label}", "a {label}", "a photo of a {label}", "a single {label}", "a single piece of {label}")


class LabellingError(ValueError):
    """Labelling cannot produce a usable set as asked (no images, no boxes for a class); the message says why."""


@dataclass(frozen=True)
class PromptScore:
    """How well one prompt's boxes match the known boxes: AP50, and precision/recall at the labelling threshold."""

    prompt: str
    ap50: float
    precision: float
    recall: float
    boxes: int  # boxes the teacher gave at or above the labelling threshold


def _xyxy(dets: Sequence[Detection]) -> torch.Tensor:
    return torch.tensor([d.box for d in dets], dtype=torch.float32).reshape(-1, 4)


def nms(dets: Sequence[Detection], iou: float = 0.5) -> list[Detection]:
    """Non-maximum suppression within each label (torchvision batched_nms); highest score first."""
    if not dets:
        return []
    labels = sorted({d.label for d in dets})
    idx = torch.tensor([labels.index(d.label) for d in dets])
    scores = torch.tensor([d.score for d in dets], dtype=torch.float32)
    keep = batched_nms(_xyxy(dets), scores, idx, iou)
    return [dets[i] for i in keep.tolist()]


def dedupe_across_classes(dets: list[Detection], iou: float = 0.7) -> list[Detection]:
    """Where boxes of different labels overlap with IoU >= iou, keep only the highest-scoring one.

    A teacher that gives one object several classes produces exactly such boxes. Boxes of the same
    label are never removed here (that is `nms`'s job); order of the survivors is by score.
    """
    if len(dets) < 2:
        return list(dets)
    order = sorted(range(len(dets)), key=lambda i: dets[i].score, reverse=True)
    overlaps = box_iou(_xyxy(dets), _xyxy(dets)) >= iou
    kept: list[int] = []
    for i in order:
        if not any(overlaps[i, k] and dets[k].label != dets[i].label for k in kept):
            kept.append(i)
    return [dets[i] for i in kept]


def prompt_variants(label: str) -> list[str]:
    """A few wordings of a class prompt, the bare label first, without duplicates."""
    label = " ".join(label.split())
    if not label:
        raise ValueError("label must be non-empty")
    return list(dict.fromkeys(v.format(label=label) for v in _VARIANTS))


def average_precision(matches: Sequence[tuple[float, bool]], n_truth: int) -> float:
    """AP of scored detections (score, is a true positive) against n_truth boxes, COCO's 101-point way.

    pycocotools (what torchmetrics' MeanAveragePrecision wraps, not installed here) interpolates the
    precision envelope at recall 0, 0.01, ..., 1 and averages; this is the same rule for one class at one IoU.
    """
    if n_truth <= 0:
        return 0.0
    if not matches:
        return 0.0
    ranked = sorted(matches, key=lambda m: m[0], reverse=True)
    tp = np.cumsum([hit for _, hit in ranked], dtype=np.float64)
    recall = tp / n_truth
    precision = tp / np.arange(1, len(ranked) + 1)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]  # best precision at this recall or more
    at = np.searchsorted(recall, np.linspace(0, 1, 101), side="left")
    return float(np.mean([envelope[i] if i < len(envelope) else 0.0 for i in at]))


def match_boxes(dets: Sequence[Detection], truth: Sequence[XYXY], iou: float = 0.5) -> list[tuple[float, bool]]:
    """Each detection (best score first) matched to the unmatched true box it overlaps most, if IoU >= iou."""
    dets = sorted(dets, key=lambda d: d.score, reverse=True)
    if not truth:
        return [(d.score, False) for d in dets]
    ious = box_iou(_xyxy(dets), torch.tensor(truth, dtype=torch.float32).reshape(-1, 4)) if dets else None
    free = [True] * len(truth)
    out = []
    for i, det in enumerate(dets):
        row = [v if free[j] else -1.0 for j, v in enumerate(ious[i].tolist())]
        j = int(np.argmax(row))
        hit = row[j] >= iou
        if hit:
            free[j] = False
        out.append((det.score, hit))
    return out


def score_prompts(
    teacher: Teacher,
    prompts: Sequence[str],
    label: str,
    validation: Sequence[ValidationImage],
    iou: float = 0.5,
    *,
    min_score: float = 0.3,
) -> list[PromptScore]:
    """Each prompt's AP50 (and precision/recall at min_score) on images with known boxes, best first.

    Ties keep the order given, so the simplest wording wins when the teacher does not care.
    """
    if not validation:
        raise LabellingError(f"no validation images to score prompts for {label!r}")
    validation = [(image, _boxes_of(truth, label)) for image, truth in validation]
    images = [image for image, _ in validation]
    n_truth = sum(len(truth) for _, truth in validation)
    scores = []
    for prompt in dict.fromkeys(prompts):
        found = teacher.label(images, prompt, label)
        matches = [m for dets, (_, truth) in zip(found, validation) for m in match_boxes(dets, truth, iou)]
        kept = [hit for score, hit in matches if score >= min_score]
        scores.append(
            PromptScore(
                prompt=prompt,
                ap50=average_precision(matches, n_truth),
                precision=sum(kept) / len(kept) if kept else 0.0,
                recall=sum(kept) / n_truth if n_truth else 0.0,
                boxes=len(kept),
            )
        )
    return sorted(scores, key=lambda s: (s.ap50, s.recall, s.precision), reverse=True)


def _boxes_of(truth: Sequence[XYXY], label: str) -> list[XYXY]:
    """Validation boxes as float 4-tuples; a LabellingError naming the class when they are not boxes."""
    try:
        boxes = [tuple(float(v) for v in box) for box in truth]
    except (TypeError, ValueError):
        boxes = []
    if not all(len(box) == 4 and box[0] < box[2] and box[1] < box[3] for box in boxes) or (truth and not boxes):
        raise LabellingError(f"validation boxes of {label!r} must be a list of (x0, y0, x1, y1), got {truth!r}")
    return boxes


def label_class(
    teacher: Teacher,
    images: Sequence[tuple[str, Image.Image]],
    label: str,
    prompt: str,
    *,
    min_score: float = 0.3,
    iou_nms: float = 0.5,
) -> list[LabelledImage]:
    """Boxes of ONE class on images of that class (score >= min_score, NMS); images with no box are left out.

    An image of the class on which the teacher finds nothing is a teacher miss, not a negative
    example: kept with no boxes it would teach the student that the product is background.
    """
    if not images:
        return []
    found = teacher.label([image for _, image in images], prompt, label)
    out = []
    for (stem, image), dets in zip(images, found):
        dets = nms([d for d in dets if d.score >= min_score], iou_nms)
        if dets:
            out.append(LabelledImage(stem=stem, image=image, boxes=[Box(label, d.box, d.score) for d in dets]))
    return out


def label_with_teacher(
    teacher: Teacher,
    images_by_label: Mapping[str, Sequence[tuple[str, Image.Image]]],
    prompts: Mapping[str, str | None] | None,
    validation: Mapping[str, Sequence[ValidationImage]] | None,
    out_dir: Path,
    *,
    seed: int = 0,
    iou_dedupe: float = 0.7,
    min_score: float = 0.3,
    iou_nms: float = 0.5,
    val_share: float = 0.2,
    split_of: Mapping[str, str] | None = None,
    card_extra: Mapping | None = None,
) -> Path:
    """Label each class on its own images, de-duplicate across classes, split, and write ONE label set.

    The prompt of a class is the one given, else the best of `prompt_variants` on its validation
    images, else (no validation images) the bare label. An image listed under several labels with the
    same stem gets their boxes merged and de-duplicated. The split is a seeded shuffle per class
    (val_share to val), except for stems that `split_of` assigns (e.g. by product, so that photos of
    one product never straddle train and val). `card_extra` adds fields to the card (its own fields
    win). Raises LabellingError (or LabelSetError for an existing out_dir) before anything is written.
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise LabelSetError(f"{out_dir} already exists; a label set is never overwritten")
    labels = list(images_by_label)
    if not labels or not all(isinstance(label, str) and label.strip() == label != "" for label in labels):
        raise LabellingError(f"class names must be non-empty, without outer spaces, got {labels}")
    if not 0.0 <= val_share < 1.0:
        raise LabellingError(f"val_share must be in [0, 1), got {val_share}")
    unknown = sorted(set((split_of or {}).values()) - set(SPLITS))
    if unknown:
        raise LabellingError(f"unknown splits {unknown} in split_of; use {SPLITS}")
    prompts, validation = dict(prompts or {}), dict(validation or {})
    chosen: dict[str, dict] = {}
    per_label: dict[str, list[LabelledImage]] = {}
    sources: dict[str, dict[str, int]] = {}
    for label, images in images_by_label.items():
        if not images:
            raise LabellingError(f"class {label!r} has no images to label")
        prompt, record = _choose_prompt(teacher, label, prompts.get(label), validation.get(label), min_score)
        chosen[label] = record
        labelled = label_class(teacher, images, label, prompt, min_score=min_score, iou_nms=iou_nms)
        sources[label] = {
            "images": len(images),
            "labelled": len(labelled),
            "without_boxes": len(images) - len(labelled),
        }
        log.info("%s: %d of %d images labelled with prompt %r", label, len(labelled), len(images), prompt)
        if not labelled:
            raise LabellingError(
                f"the {teacher.name} teacher found no box of {label!r} (score >= {min_score}) in any of its "
                f"{len(images)} images with prompt {prompt!r}; nothing was written"
            )
        per_label[label] = labelled
    merged, removed = _merge(per_label, iou_dedupe)
    _split(per_label, merged, seed, val_share, dict(split_of or {}))
    card = {
        "kind": "teacher-labels",
        "teacher": teacher.name,
        "teacher_model": teacher.model,
        "prompts": chosen,
        "thresholds": {"min_score": min_score, "iou_nms": iou_nms, "iou_dedupe": iou_dedupe, "iou_prompt_ap": 0.5},
        "seed": seed,
        "val_share": val_share,
        "sources": sources,
        "deduplicated_boxes": removed,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    card = {**dict(card_extra or {}), **card}
    label_set = LabelSet(names=labels, images=sorted(merged.values(), key=lambda item: item.stem), card=card)
    return write_label_set(label_set, out_dir)


def _choose_prompt(
    teacher: Teacher, label: str, given: str | None, validation: Sequence[ValidationImage] | None, min_score: float
) -> tuple[str, dict]:
    """The prompt for one class and the card's record of how it was chosen."""
    if given is not None and given.strip():
        return given, {"chosen": given, "source": "given", "scores": []}
    if not validation:
        prompt = prompt_variants(label)[0]
        return prompt, {"chosen": prompt, "source": "default (no validation images)", "scores": []}
    scores = score_prompts(teacher, prompt_variants(label), label, validation, min_score=min_score)
    return scores[0].prompt, {"chosen": scores[0].prompt, "source": "scored", "scores": [asdict(s) for s in scores]}


def _merge(per_label: dict[str, list[LabelledImage]], iou: float) -> tuple[dict[str, LabelledImage], int]:
    """One LabelledImage per stem; an image labelled by several classes has its boxes de-duplicated."""
    merged: dict[str, LabelledImage] = {}
    removed = 0
    for items in per_label.values():
        for item in items:
            if item.stem not in merged:
                merged[item.stem] = LabelledImage(stem=item.stem, image=item.image, boxes=list(item.boxes))
                continue
            other = merged[item.stem]
            if other.image.size != item.image.size:
                raise LabellingError(f"stem {item.stem!r} names two different images; stems must be unique per image")
            boxes = other.boxes + item.boxes
            dets = [Detection(box=b.box, label=b.label, score=b.score) for b in boxes]
            kept = dedupe_across_classes(dets, iou)
            removed += len(dets) - len(kept)
            other.boxes = [Box(d.label, d.box, d.score) for d in kept]
    return merged, removed


def _split(
    per_label: dict[str, list[LabelledImage]],
    merged: dict[str, LabelledImage],
    seed: int,
    share: float,
    split_of: dict[str, str],
) -> None:
    """Given splits first; then a seeded per-class shuffle sends val_share of the rest to val (one of two or more)."""
    for stem, split in split_of.items():
        if stem in merged:
            merged[stem].split = split
    rng = random.Random(seed)
    assigned: set[str] = set(split_of)
    for label in sorted(per_label):
        stems = sorted({item.stem for item in per_label[label]} - assigned)
        rng.shuffle(stems)
        n_val = round(len(stems) * share)
        if share > 0 and n_val == 0 and len(stems) >= 2:
            n_val = 1
        for k, stem in enumerate(stems):
            merged[stem].split = "val" if k < n_val else "train"
        assigned.update(stems)
