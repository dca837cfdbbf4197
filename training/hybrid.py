"""A second student: the YOLO student's boxes, named by a class head over the pretrained catalog embedder.

A YOLO trained from scratch on a few hundred scenes learns where products are long before it learns
what they are: telling "animals" from "toys & games" across drawings it never saw needs features
that a 2.6M-parameter network does not learn from 20 products a class. The embedder every image
already goes through (EfficientNet-Lite0, ImageNet-pretrained) has them. So this student keeps the
YOLO's boxes (class-agnostic: the best class score is the box's confidence) and names each box with
a logistic-regression head trained on the embeddings of the teacher's boxes in the training scenes
(optionally with a background class fitted on the YOLO's own false boxes there: a distractor product,
half an item; such a box then scores low for every class).
Both students are evaluated the same way on the same held-out scenes (`evaluate_detector`).

The head is a small .npz beside the student's weights (`head.npz`: coef, intercept, names, the
embedder's model key), so serving it costs one embedding per box, which vitrine computes anyway.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from training.labelling import average_precision, match_boxes, nms
from training.labelsets import read_boxes, read_card
from vision.detector import Detection, Detector
from vision.embedder import Embedder
from vision.image import pil_open
from vision.items import crop_box, iou

log = logging.getLogger(__name__)

HEAD_FILE = "head.npz"


@dataclass(frozen=True)
class ClassHead:
    """Multinomial logistic regression on unit embedding vectors: probabilities over `names`.

    With `background`, the last row of coef is a "not one of the classes" class, fitted on the YOLO's
    own false boxes (a distractor product, a box that cuts an item in two): its probability is left
    out, so such a box scores low for every class.
    """

    coef: np.ndarray  # (classes [+ background], dim)
    intercept: np.ndarray  # (classes [+ background],)
    names: list[str]
    embedder_key: str
    background: bool = False

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        logits = vectors @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return (p / p.sum(axis=1, keepdims=True))[:, : len(self.names)]

    def save(self, path: Path) -> Path:
        np.savez(
            path, coef=self.coef, intercept=self.intercept, names=np.array(self.names), key=self.embedder_key,
            background=np.array(self.background),
        )  # fmt: skip
        return path

    @classmethod
    def load(cls, path: Path) -> ClassHead:
        with np.load(path, allow_pickle=False) as z:
            background = bool(z["background"]) if "background" in z else False  # heads saved before it
            return cls(z["coef"], z["intercept"], [str(n) for n in z["names"]], str(z["key"]), background)


def truth(scene_dir: Path, split: str) -> list[tuple[Path, list[tuple[int, tuple[float, float, float, float]]]]]:
    """Per image of a split: its path and (class id, x0, y0, x1, y1 in pixels) boxes."""
    out = []
    for stem, rows in read_boxes(scene_dir, split).items():
        path = Path(scene_dir) / "images" / split / f"{stem}.jpg"
        with pil_open(path) as im:
            w, h = im.size
        boxes = [
            (c, ((cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h))
            for c, (cx, cy, bw, bh) in rows
        ]
        out.append((path, boxes))
    return out


def fit_class_head(
    embedder: Embedder,
    scene_dir: Path,
    *,
    splits: Sequence[str] = ("train",),
    c: float = 10.0,
    seed: int = 0,
    negatives: Detector | None = None,
    negatives_per_image: int = 3,
    negative_iou: float = 0.4,
) -> ClassHead:
    """Embed the crop of every labelled box of the scenes' splits and fit the head (scikit-learn).

    With `negatives` (the YOLO student), its most confident boxes on the same images that overlap no
    labelled box by `negative_iou` or more (at most `negatives_per_image` an image) are a background class.
    """
    from sklearn.linear_model import LogisticRegression

    names = read_card(scene_dir)["names"]
    crops, labels = [], []
    for split in splits:
        for path, boxes in truth(scene_dir, split):
            with pil_open(path) as im:
                image = im.convert("RGB")
            for cls, box in boxes:
                crops.append(crop_box(image, box))
                labels.append(cls)
            if negatives is not None:
                false = _false_boxes(negatives, image, [b for _, b in boxes], negative_iou)[:negatives_per_image]
                crops += [crop_box(image, d.box) for d in false]
                labels += [len(names)] * len(false)
    if len({x for x in labels if x < len(names)}) < 2:
        raise ValueError(f"a class head needs boxes of at least 2 classes, got {sorted(set(labels))}")
    background = len(names) in labels
    rows = len(names) + background
    vectors = embedder.embed(crops)
    model = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(vectors, labels)
    coef = np.zeros((rows, vectors.shape[1]), np.float32)
    intercept = np.full(rows, -1e4, np.float32)  # a class with no box in training is never chosen
    coef[model.classes_] = model.coef_ if len(model.classes_) > 2 else np.vstack([-model.coef_, model.coef_])
    intercept[model.classes_] = (
        model.intercept_ if len(model.classes_) > 2 else np.array([-model.intercept_[0], model.intercept_[0]])
    )
    return ClassHead(coef, intercept, names, embedder.model_key, background)


def _false_boxes(detector: Detector, image: Image.Image, truth_boxes, max_iou: float) -> list[Detection]:
    """The detector's item boxes on an image that overlap no true box by max_iou, most confident first."""
    found = nms([Detection(d.box, "box", d.score) for d in detector.detect([image])[0] if d.kind == "item"], 0.6)
    return [d for d in found if all(iou(d.box, t) < max_iou for t in truth_boxes)]


class HybridStudent(Detector):
    """YOLO boxes (any class), each named by the class head over the embedder; score = box conf x class prob.

    Serving names each box once (its most probable class). `labels_per_box` > 1 emits a box once for each
    of its k most probable classes, each with its own score: the COCO evaluation protocol, where a
    detector scores every box for every class (ultralytics' val does the same with multi-label NMS),
    so a box whose class the head ranked second still counts for that class, below the confident ones.
    """

    name = "student+head"

    def __init__(
        self, boxes: Detector, embedder: Embedder, head: ClassHead, *, iou: float = 0.6, labels_per_box: int = 1
    ):
        super().__init__()
        if labels_per_box < 1:
            raise ValueError(f"labels_per_box must be at least 1, got {labels_per_box}")
        self.boxes, self.embedder, self.head, self.iou = boxes, embedder, head, iou
        self.labels_per_box = labels_per_box

    def describe(self) -> str:
        return (
            f"{self.name}: {self.boxes.describe()}; head over {self.head.embedder_key} ({len(self.head.names)} classes)"
        )

    def _load(self) -> None:
        self.boxes.load()
        self.embedder.load()
        if self.embedder.model_key != self.head.embedder_key:
            raise ValueError(f"the head was fitted on {self.head.embedder_key}, not {self.embedder.model_key}")

    def _detect(self, images: list[Image.Image]) -> list[list[Detection]]:
        out = []
        for image, found in zip(images, self.boxes.detect(images), strict=True):
            # One box per object whatever class the YOLO gave it (class-agnostic NMS), then the head names it.
            items = nms([Detection(d.box, "box", d.score) for d in found if d.kind == "item"], self.iou)
            if not items:
                out.append([d for d in found if d.kind != "item"])
                continue
            probs = self.head.probabilities(self.embedder.embed([crop_box(image, d.box) for d in items]))
            dets = [d for d in found if d.kind != "item"]
            for d, p in zip(items, probs, strict=True):
                for k in np.argsort(-p, kind="stable")[: self.labels_per_box]:
                    dets.append(Detection(d.box, self.head.names[k], float(d.score * p[k]), "item"))
            out.append(dets)
        return out


def evaluate_detector(detector: Detector, scene_dir: Path, split: str = "test", iou: float = 0.5) -> dict:
    """mAP50 and AP50 per class of any detector on a written scene set's split (COCO 101-point AP)."""
    started = time.perf_counter()
    names = read_card(scene_dir)["names"]
    matches: dict[str, list[tuple[float, bool]]] = {n: [] for n in names}
    counts = dict.fromkeys(names, 0)
    images = truth(scene_dir, split)
    for path, boxes in images:
        with pil_open(path) as im:
            found = detector.detect([im.convert("RGB")])[0]
        for k, name in enumerate(names):
            gt = [b for c, b in boxes if c == k]
            counts[name] += len(gt)
            matches[name] += match_boxes([d for d in found if d.kind == "item" and d.label == name], gt, iou)
    per_class = {
        n: {"ap50": round(average_precision(matches[n], counts[n]), 4) if counts[n] else None, "instances": counts[n]}
        for n in names
    }
    aps = [r["ap50"] for r in per_class.values() if r["ap50"] is not None]
    return {
        "map50": round(float(np.mean(aps)), 4) if aps else 0.0,
        "per_class": per_class,
        "images": len(images),
        "seconds": round(time.perf_counter() - started, 1),
        "ap": "COCO 101-point at IoU 0.5 (training/labelling.average_precision)",
    }


def calibrate_min_score(detector: Detector, scene_dir: Path, split: str = "val", iou: float = 0.5) -> dict:
    """The score threshold with the best F1 of finding the labelled boxes (any class) on a split.

    A student's scores are not on the COCO detector's scale (a from-scratch YOLO unsure between classes
    gives a found product a low top-class score), so the item policy's fixed VITRINE_DETECT_MIN_SCORE
    would drop most of its boxes; serving uses this threshold instead. Returns {"min_score", "f1",
    "precision", "recall", "boxes"}.
    """
    scored: list[tuple[float, bool]] = []
    n_truth = 0
    for path, boxes in truth(scene_dir, split):
        with pil_open(path) as im:
            found = [d for d in detector.detect([im.convert("RGB")])[0] if d.kind == "item"]
        n_truth += len(boxes)
        scored += match_boxes([Detection(d.box, "box", d.score) for d in found], [b for _, b in boxes], iou)
    best = {"min_score": 0.25, "f1": 0.0, "precision": 0.0, "recall": 0.0, "boxes": n_truth}
    ranked = sorted(scored, key=lambda m: m[0], reverse=True)
    hits = 0
    for k, (score, hit) in enumerate(ranked, 1):
        hits += hit
        precision, recall = hits / k, hits / max(1, n_truth)
        f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
        if f1 > best["f1"]:
            best = {"min_score": round(score, 4), "f1": round(f1, 4), "precision": round(precision, 4),
                    "recall": round(recall, 4), "boxes": n_truth}  # fmt: skip
    return best
