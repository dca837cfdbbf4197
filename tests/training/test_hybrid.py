"""The YOLO-boxes + class-head student: the head learns classes from scene boxes with the real embedder,
the evaluation rule scores detections against the scenes' boxes, and serving picks the student the card names."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from streams.detectors import TenantDetectors
from training.hybrid import (
    HEAD_FILE,
    ClassHead,
    HybridStudent,
    calibrate_min_score,
    evaluate_detector,
    fit_class_head,
    truth,
)
from training.labelsets import Box, LabelledImage, LabelSet, write_label_set
from vision.detector import Detection, Detector, WholeImageDetector
from vision.embedder import create_embedder

COLOURS = {"red": (220, 30, 30), "blue": (30, 60, 220)}


def scene(k: int, label: str) -> LabelledImage:
    rng = np.random.default_rng(k)
    im = Image.new("RGB", (128, 128), tuple(int(v) for v in rng.integers(120, 200, 3)))
    x, y, r = int(rng.integers(10, 60)), int(rng.integers(10, 60)), int(rng.integers(25, 45))
    ImageDraw.Draw(im).ellipse((x, y, x + r, y + r), fill=COLOURS[label])
    return LabelledImage(f"{label}-{k}", im, [Box(label, (x, y, x + r, y + r))], "train" if k < 12 else "test")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    images = [scene(k, label) for label in COLOURS for k in range(16)]
    return write_label_set(LabelSet(list(COLOURS), images, {"teacher": "test"}), tmp_path_factory.mktemp("s") / "set")


@pytest.fixture(scope="module")
def embedder(models_dir):
    e = create_embedder("efficientnet-lite0", cache_dir=models_dir)
    e.load()
    return e


class Given(Detector):
    """Input data for the rule under test: returns the boxes it is given for each image, in order."""

    name = "given"

    def __init__(self, answers):
        super().__init__()
        self.answers = iter(answers)

    def _load(self):
        pass

    def _detect(self, images):
        return [next(self.answers) for _ in images]


def test_the_head_learns_the_classes_from_the_scene_boxes_and_survives_a_round_trip(scenes, embedder, tmp_path):
    head = fit_class_head(embedder, scenes, splits=("train",))
    assert head.names == ["red", "blue"] and head.coef.shape == (2, embedder.dim)
    crops, labels = [], []
    for path, boxes in truth(scenes, "test"):  # scenes it never saw
        with Image.open(path) as im:
            crops += [im.convert("RGB").crop(tuple(map(int, b))) for _, b in boxes]
            labels += [c for c, _ in boxes]
    predicted = head.probabilities(embedder.embed(crops)).argmax(axis=1)
    assert (predicted == np.array(labels)).mean() == 1.0
    again = ClassHead.load(head.save(tmp_path / HEAD_FILE))
    assert again.names == head.names and again.embedder_key == embedder.model_key
    assert np.allclose(again.probabilities(embedder.embed(crops[:2])), head.probabilities(embedder.embed(crops[:2])))


def test_the_evaluation_rule_scores_right_and_wrong_labels(scenes):
    items = truth(scenes, "test")
    right = Given([[Detection(b, ["red", "blue"][c], 0.9) for c, b in boxes] for _, boxes in items])
    r = evaluate_detector(right, scenes, "test")
    assert r["map50"] == 1.0 and r["per_class"]["red"] == {"ap50": 1.0, "instances": 4} and r["images"] == 8
    wrong = Given([[Detection(b, ["blue", "red"][c], 0.9) for c, b in boxes] for _, boxes in items])
    assert evaluate_detector(wrong, scenes, "test")["map50"] == 0.0


class Corner(Detector):
    """A YOLO's false box: the scene's bottom-right corner (plain background), and a box on no object."""

    name = "corner"

    def _load(self):
        pass

    def _detect(self, images):
        return [[Detection((104, 104, 127, 127), "x", 0.6), Detection((0, 0, 4, 4), "x", 0.1)] for _ in images]


def test_a_background_class_fitted_on_the_yolos_false_boxes_scores_them_low_for_every_class(scenes, embedder, tmp_path):
    head = fit_class_head(embedder, scenes, splits=("train",), negatives=Corner(), negatives_per_image=1)
    assert head.background and head.coef.shape == (3, embedder.dim) and head.names == ["red", "blue"]
    crops, labels, corners = [], [], []
    for path, boxes in truth(scenes, "test"):
        with Image.open(path) as im:
            image = im.convert("RGB")
        crops += [image.crop(tuple(map(int, b))) for _, b in boxes]
        labels += [c for c, _ in boxes]
        corners.append(image.crop((104, 104, 127, 127)))
    p = head.probabilities(embedder.embed(crops))
    assert p.shape == (len(crops), 2) and (p.argmax(axis=1) == np.array(labels)).mean() == 1.0
    assert (p.max(axis=1) > 0.5).all()  # the classes keep their probability
    assert (head.probabilities(embedder.embed(corners)).sum(axis=1) < 0.5).all()  # the background's is left out
    again = ClassHead.load(head.save(tmp_path / HEAD_FILE))
    assert again.background and np.allclose(again.coef, head.coef)


def test_the_operating_threshold_is_the_score_with_the_best_f1_on_the_split(scenes):
    items = truth(scenes, "test")
    # Every true box at 0.08 (a student's low scores) plus one false box per image at 0.02.
    answers = [[Detection(b, "x", 0.08) for _, b in boxes] + [Detection((0, 0, 5, 5), "x", 0.02)] for _, boxes in items]
    r = calibrate_min_score(Given(answers), scenes, "test")
    assert r == {"min_score": 0.08, "f1": 1.0, "precision": 1.0, "recall": 1.0, "boxes": 8}


def test_the_hybrid_names_every_box_with_the_head_and_serving_uses_it_when_the_card_says_so(scenes, embedder, tmp_path):
    head = fit_class_head(embedder, scenes, splits=("train",))
    # A detector's whole-image box is not an item: the head leaves it as it was.
    whole = WholeImageDetector(trim=False)
    hybrid = HybridStudent(whole, embedder, head)
    path, _ = truth(scenes, "test")[0]
    with Image.open(path) as im:
        image = im.convert("RGB")
    assert hybrid.detect([image]) == whole.detect([image])
    boxes = Given([[Detection((0, 0, 128, 128), "anything", 0.8), Detection((1, 1, 127, 127), "else", 0.5)]])
    (found,) = HybridStudent(boxes, embedder, head).detect([image])
    assert len(found) == 1 and found[0].label in head.names  # class-agnostic NMS kept one box
    assert 0 < found[0].score <= 0.8
    # Scored for both classes (the COCO protocol): the same box twice, the served label first and higher.
    boxes = Given([[Detection((0, 0, 128, 128), "anything", 0.8), Detection((1, 1, 127, 127), "else", 0.5)]])
    both = HybridStudent(boxes, embedder, head, labels_per_box=2).detect([image])[0]
    assert [d.box for d in both] == [found[0].box] * 2 and {d.label for d in both} == set(head.names)
    assert both[0] == found[0] and both[1].score <= both[0].score
    assert sum(d.score for d in both) == pytest.approx(0.8)  # conf x p over every class: the whole conf
    with pytest.raises(ValueError, match="labels_per_box"):
        HybridStudent(boxes, embedder, head, labels_per_box=0)

    artefact = tmp_path / "detector-x"
    artefact.mkdir()
    head.save(artefact / HEAD_FILE)
    weights = artefact / "student.pt"
    weights.write_bytes(b"")  # not loaded here: only the choice of student is under test
    thresholds = {"yolo": {"min_score": 0.1}, "yolo+head": {"min_score": 0.03}}
    for serve, kind in (("yolo+head", HybridStudent), ("yolo", type(None))):
        (artefact / "card.json").write_text(json.dumps({"serve": serve, "serve_min_score": thresholds}))
        built = TenantDetectors(WholeImageDetector(), cache_dir=tmp_path, embedder=embedder)._student(weights, "k")
        assert isinstance(built, HybridStudent) == (kind is HybridStudent)
        assert built.min_score == thresholds[serve]["min_score"]  # its own calibrated threshold serves
