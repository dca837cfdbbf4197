"""Labelling with a teacher: de-duplication, prompt scoring, one class at a time, the written label set."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from training.labelling import (
    LabellingError,
    PromptScore,
    average_precision,
    dedupe_across_classes,
    label_class,
    label_with_teacher,
    nms,
    prompt_variants,
    score_prompts,
)
from training.labelsets import LabelSetError, read_boxes, read_card
from vision.detector import Detection
from vision.teachers import Teacher

XYXY = tuple[float, float, float, float]


class PromptSensitiveTeacher(Teacher):
    """A stand-in for a zero-shot detector (the process edge): which box it gives depends on the prompt.

    With a prompt in `good` it boxes the product (the true box); with "photo" in the prompt it boxes
    the whole picture (as "a picture of a swimsuit" boxes the whole person); otherwise a box shifted
    off the product. Scores per label come from `scores`.
    """

    name = "prompt-sensitive"
    model = "fake (test)"

    def __init__(self, truth: dict[int, XYXY], good: set[str], scores: dict[str, float] | None = None):
        super().__init__()
        self.truth, self.good, self.scores = truth, good, scores or {}
        self.calls: list[tuple[str, str, int]] = []

    def _load(self) -> None:
        pass

    def _label(self, images, prompt, label):
        self.calls.append((prompt, label, len(images)))
        score = self.scores.get(label, 0.9)
        out = []
        for image in images:
            box = self.truth.get(id(image))
            if box is None:
                out.append([])
            elif prompt in self.good:
                out.append([Detection(box, label, score)])
            elif "photo" in prompt:
                out.append([Detection((0.0, 0.0, float(image.width), float(image.height)), label, 0.95)])
            else:
                x0, y0, x1, y1 = box
                shift = (x1 - x0) * 0.8
                out.append([Detection((x0 + shift, y0, x1 + shift, y1), label, 0.5)])
        return out


def _product(seed: int, size: tuple[int, int] = (96, 80)) -> tuple[Image.Image, XYXY]:
    """A small picture and its product box (placed by the seed)."""
    image = Image.new("RGB", size, (240, 240, 240))
    x0, y0 = 8 + seed % 5 * 4, 6 + seed % 3 * 5
    box = (float(x0), float(y0), float(x0 + 30), float(y0 + 40))
    image.paste((30 + seed * 10, 60, 90), tuple(int(v) for v in box))
    return image, box


# --- de-duplication ---


def test_two_labels_on_one_object_keep_the_higher_score():
    shirt = Detection((10, 10, 50, 60), "shirt", 0.8)
    same_object_as_dress = Detection((11, 10, 50, 61), "dress", 0.6)  # IoU ~0.95 with the shirt box
    bag_elsewhere = Detection((60, 10, 90, 40), "bag", 0.5)
    assert dedupe_across_classes([same_object_as_dress, shirt, bag_elsewhere]) == [shirt, bag_elsewhere]


def test_dedupe_leaves_same_label_boxes_to_nms():
    a, b = Detection((10, 10, 50, 60), "shirt", 0.8), Detection((11, 10, 50, 61), "shirt", 0.6)
    other = Detection((12, 10, 52, 60), "dress", 0.7)
    # Both shirts survive de-duplication although they overlap; the dress overlaps the better shirt.
    assert dedupe_across_classes([a, b, other]) == [a, b]
    assert dedupe_across_classes([a, b]) == [a, b]
    # NMS removes the weaker shirt, never a box of another label.
    assert nms([a, b, other], iou=0.5) == [a, other]


def test_boxes_below_the_iou_are_kept():
    a, b = Detection((0, 0, 10, 10), "shirt", 0.9), Detection((5, 0, 15, 10), "dress", 0.8)  # IoU 1/3
    assert dedupe_across_classes([a, b], iou=0.7) == [a, b]
    assert dedupe_across_classes([a, b], iou=0.3) == [a]
    assert dedupe_across_classes([]) == [] and nms([]) == []


# --- prompts and their scores ---


def test_prompt_variants_are_distinct_and_start_with_the_label():
    variants = prompt_variants("swimsuit")
    assert variants[0] == "swimsuit" and "a single piece of swimsuit" in variants
    assert len(variants) == len(set(variants)) >= 4
    assert prompt_variants("  t  shirt ")[0] == "t shirt"
    with pytest.raises(ValueError):
        prompt_variants(" ")


def test_average_precision_follows_the_coco_101_point_rule():
    # Hand-computed with COCO's rule (precision envelope sampled at recall 0, 0.01, ..., 1):
    assert average_precision([(0.9, True), (0.8, True)], 2) == pytest.approx(1.0)
    # recall reaches 0.5 at precision 1, then nothing: 51 of 101 points at 1.0.
    assert average_precision([(0.9, True), (0.8, False)], 2) == pytest.approx(51 / 101)
    # the only hit ranks second: precision 0.5 at every recall point.
    assert average_precision([(0.9, False), (0.8, True)], 1) == pytest.approx(0.5)
    assert average_precision([], 3) == 0.0 and average_precision([(0.5, False)], 0) == 0.0


def test_score_prompts_picks_the_prompt_that_boxes_the_product():
    products = [_product(seed) for seed in range(4)]
    truth = {id(image): box for image, box in products}
    teacher = PromptSensitiveTeacher(truth, good={"a single piece of shirt"})
    validation = [(image, [box]) for image, box in products]
    scores = score_prompts(teacher, prompt_variants("shirt"), "shirt", validation)
    assert [s.prompt for s in scores][0] == "a single piece of shirt"
    assert scores[0] == PromptScore("a single piece of shirt", ap50=1.0, precision=1.0, recall=1.0, boxes=4)
    photo = next(s for s in scores if s.prompt == "a photo of a shirt")
    assert photo.ap50 == 0.0 and photo.precision == 0.0 and photo.boxes == 4  # the whole picture each time
    assert {s.prompt for s in scores} == set(prompt_variants("shirt"))
    with pytest.raises(LabellingError, match="no validation images"):
        score_prompts(teacher, ["shirt"], "shirt", [])
    with pytest.raises(LabellingError, match="must be a list of"):
        score_prompts(teacher, ["shirt"], "shirt", [products[0]])  # a bare box instead of a list of boxes


def test_label_class_keeps_confident_boxes_and_leaves_out_misses():
    images = [_product(seed) for seed in range(3)]
    truth = {id(image): box for image, box in images[:2]}  # the teacher misses the third image
    teacher = PromptSensitiveTeacher(truth, good={"shirt"}, scores={"shirt": 0.7})
    named = [(f"img-{k}", image) for k, (image, _) in enumerate(images)]
    labelled = label_class(teacher, named, "shirt", "shirt", min_score=0.3)
    assert [item.stem for item in labelled] == ["img-0", "img-1"]
    assert [[b.box for b in item.boxes] for item in labelled] == [[images[0][1]], [images[1][1]]]
    assert all(b.label == "shirt" and b.score == 0.7 for item in labelled for b in item.boxes)
    assert label_class(teacher, named, "shirt", "shirt", min_score=0.8) == []
    assert teacher.calls[0] == ("shirt", "shirt", 3), "one call per class, on that class's images"


# --- the whole run, written as a label set ---


def _yolo_to_xyxy(row: tuple[float, float, float, float], width: int, height: int) -> XYXY:
    cx, cy, w, h = row
    return ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)


@pytest.fixture
def shop():
    """Five shirt photos, five bag photos, one picture listed under both, and shirt validation images."""
    shirts = [_product(seed) for seed in range(5)]
    bags = [_product(seed, size=(80, 96)) for seed in range(5, 10)]
    both, both_box = _product(11)
    validation = [_product(seed) for seed in range(20, 23)]
    truth = {id(image): box for image, box in [*shirts, *bags, *validation, (both, both_box)]}
    validation = [(image, [box]) for image, box in validation]
    teacher = PromptSensitiveTeacher(
        truth, good={"a single piece of shirt", "leather bag"}, scores={"shirt": 0.9, "bag": 0.6}
    )
    images_by_label = {
        "shirt": [*((f"shirt-{k}", image) for k, (image, _) in enumerate(shirts)), ("both", both)],
        "bag": [*((f"bag-{k}", image) for k, (image, _) in enumerate(bags)), ("both", both)],
    }
    boxes = {f"shirt-{k}": box for k, (_, box) in enumerate(shirts)}
    boxes |= {f"bag-{k}": box for k, (_, box) in enumerate(bags)} | {"both": both_box}
    return teacher, images_by_label, {"shirt": validation}, boxes


def test_label_with_teacher_writes_one_readable_set_with_its_card(shop, tmp_path):
    teacher, images_by_label, validation, boxes = shop
    out = label_with_teacher(teacher, images_by_label, {"bag": "leather bag"}, validation, tmp_path / "labels", seed=3)
    card = read_card(out)
    assert card["names"] == ["shirt", "bag"]
    assert card["teacher"] == "prompt-sensitive" and card["teacher_model"] == "fake (test)"
    shirt, bag = card["prompts"]["shirt"], card["prompts"]["bag"]
    assert shirt["chosen"] == "a single piece of shirt" and shirt["source"] == "scored"
    assert [s["prompt"] for s in shirt["scores"]][0] == "a single piece of shirt"
    assert len(shirt["scores"]) == len(prompt_variants("shirt")) and shirt["scores"][0]["ap50"] == 1.0
    assert bag == {"chosen": "leather bag", "source": "given", "scores": []}
    assert card["seed"] == 3 and card["created_at"] and card["thresholds"]["iou_dedupe"] == 0.7
    assert card["sources"] == {
        "shirt": {"images": 6, "labelled": 6, "without_boxes": 0},
        "bag": {"images": 6, "labelled": 6, "without_boxes": 0},
    }
    # The picture under both labels got both classes on one object: only the shirt (0.9 > 0.6) stays.
    assert card["deduplicated_boxes"] == 1
    written = {**read_boxes(out, "train"), **read_boxes(out, "val")}
    assert set(written) == set(boxes)
    assert 2 <= len(read_boxes(out, "val")) <= 4, "about a fifth of each class goes to val"
    for stem, rows in written.items():
        with Image.open(next(out.glob(f"images/*/{stem}.jpg"))) as image:
            size = image.size
        assert len(rows) == 1
        cls, row = rows[0]
        assert card["names"][cls] == ("bag" if stem.startswith("bag") else "shirt")
        assert _yolo_to_xyxy(row, *size) == pytest.approx(boxes[stem], abs=0.01)


def test_the_split_is_reproducible_from_the_seed(shop, tmp_path):
    teacher, images_by_label, validation, _ = shop
    a = label_with_teacher(teacher, images_by_label, {"bag": "leather bag"}, validation, tmp_path / "a", seed=5)
    b = label_with_teacher(teacher, images_by_label, {"bag": "leather bag"}, validation, tmp_path / "b", seed=5)
    assert set(read_boxes(a, "val")) == set(read_boxes(b, "val"))


def test_given_splits_and_card_fields_are_kept(shop, tmp_path):
    teacher, images_by_label, validation, _ = shop
    split_of = {"shirt-0": "val", "shirt-1": "val", "bag-0": "test"}
    out = label_with_teacher(
        teacher, images_by_label, {"bag": "leather bag"}, validation, tmp_path / "s", split_of=split_of,
        card_extra={"category": "tops", "teacher": "overridden?"},
    )  # fmt: skip
    val, test = read_boxes(out, "val"), read_boxes(out, "test")
    assert {"shirt-0", "shirt-1"} <= set(val) and set(test) == {"bag-0"}
    card = read_card(out)
    assert card["category"] == "tops" and card["teacher"] == "prompt-sensitive"
    with pytest.raises(LabellingError, match="unknown splits"):
        label_with_teacher(teacher, images_by_label, None, None, tmp_path / "t", split_of={"shirt-0": "holdout"})


def test_an_existing_set_is_refused_and_a_failed_run_writes_nothing(shop, tmp_path):
    teacher, images_by_label, validation, _ = shop
    out = label_with_teacher(teacher, images_by_label, {"bag": "leather bag"}, validation, tmp_path / "set")
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(LabelSetError, match="already exists"):
        label_with_teacher(teacher, images_by_label, {"bag": "leather bag"}, validation, out)
    # The bag's prompt now finds only shifted boxes scoring 0.5: with min_score 0.6 the bag gets nothing.
    with pytest.raises(LabellingError, match="no box of 'bag'"):
        label_with_teacher(teacher, images_by_label, {"bag": "bag"}, validation, tmp_path / "new", min_score=0.6)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    with pytest.raises(LabellingError, match="no images"):
        label_with_teacher(teacher, {"shirt": []}, None, None, tmp_path / "empty")
    with pytest.raises(LabellingError, match="class names"):
        label_with_teacher(teacher, {" shirt": images_by_label["shirt"]}, None, None, tmp_path / "blank")


def test_without_validation_images_the_bare_label_is_the_prompt(shop, tmp_path):
    teacher, images_by_label, _, _ = shop
    teacher.good = {"shirt", "bag"}
    out = label_with_teacher(teacher, images_by_label, None, None, Path(tmp_path / "plain"), seed=0)
    card = read_card(out)
    assert card["prompts"]["shirt"]["chosen"] == "shirt" and card["prompts"]["shirt"]["source"].startswith("default")
