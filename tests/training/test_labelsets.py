"""Label sets on disk: the YOLO layout, the card, merging with remapped class ids, COCO export, refusals."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from training.labelsets import (
    Box,
    LabelledImage,
    LabelSet,
    LabelSetError,
    merge_label_sets,
    read_boxes,
    read_card,
    to_coco,
    write_label_set,
    yolo_line,
)


def _set(names, rows, card=None):
    images = [
        LabelledImage(stem=stem, image=Image.new("RGB", (200, 100), "white"), boxes=boxes, split=split)
        for stem, split, boxes in rows
    ]
    return LabelSet(names=names, images=images, card=card or {"teacher": "test"})


def test_a_box_becomes_a_normalised_yolo_line_clipped_to_the_image():
    assert yolo_line(Box("a", (20, 10, 60, 50)), 3, 200, 100) == "3 0.200000 0.300000 0.200000 0.400000"
    # Outside the frame: clipped to it (a box wholly outside has no size, never a negative one).
    assert yolo_line(Box("a", (-20, -10, 100, 200)), 0, 200, 100) == "0 0.250000 0.500000 0.500000 1.000000"
    assert yolo_line(Box("a", (250, 10, 300, 50)), 0, 200, 100) == "0 1.000000 0.300000 0.000000 0.400000"


def test_written_set_reads_back_with_its_card_and_counts(tmp_path):
    out = write_label_set(
        _set(
            ["shoe", "bag"],
            [("a", "train", [Box("bag", (0, 0, 100, 50))]), ("b", "test", [Box("shoe", (100, 50, 200, 100))])],
            card={"teacher": "catalog", "seed": 3},
        ),
        tmp_path / "set",
    )
    card = read_card(out)
    assert card["names"] == ["shoe", "bag"] and card["teacher"] == "catalog" and card["seed"] == 3
    assert card["counts"] == {"train": {"images": 1, "boxes": 1}, "test": {"images": 1, "boxes": 1}}
    assert read_boxes(out, "train") == {"a": [(1, (0.25, 0.25, 0.5, 0.5))]}
    assert read_boxes(out, "test") == {"b": [(0, (0.75, 0.75, 0.5, 0.5))]}
    data = (out / "data.yaml").read_text()
    assert "train: images/train" in data and "test: images/test" in data and "val:" not in data
    assert '1: "bag"' in data


def test_an_existing_folder_is_never_overwritten_and_a_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "set"
    write_label_set(_set(["a"], [("x", "train", [])]), target)
    with pytest.raises(LabelSetError, match="already exists"):
        write_label_set(_set(["a"], [("y", "train", [])]), target)
    bad = _set(["a"], [("ok", "train", [Box("a", (0, 0, 5, 5))]), ("bad", "train", [Box("zebra", (0, 0, 5, 5))])])
    with pytest.raises(LabelSetError, match="zebra"):
        write_label_set(bad, tmp_path / "other")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]  # no temporary or partial folder left


@pytest.mark.parametrize(
    ("names", "rows", "message"),
    [
        (["a"], [], "at least one image"),
        ([], [("x", "train", [])], "non-empty"),
        (["a", "a"], [("x", "train", [])], "distinct"),
        (["a"], [("x", "train", []), ("x", "val", [])], "unique"),
        (["a"], [("x", "holdout", [])], "unknown split"),
    ],
)
def test_malformed_sets_are_refused(tmp_path, names, rows, message):
    with pytest.raises(LabelSetError, match=message):
        write_label_set(_set(names, rows), tmp_path / "set")


def test_merge_remaps_class_ids_onto_one_name_list(tmp_path):
    first = write_label_set(_set(["shoe"], [("a", "train", [Box("shoe", (0, 0, 100, 100))])]), tmp_path / "1")
    second = write_label_set(
        _set(["bag", "shoe"], [("a", "train", [Box("bag", (0, 0, 50, 50)), Box("shoe", (50, 0, 100, 50))])]),
        tmp_path / "2",
    )
    merged = merge_label_sets([first, second], tmp_path / "merged")
    assert read_card(merged)["names"] == ["shoe", "bag"]
    boxes = read_boxes(merged, "train")
    assert [c for c, _ in boxes["0-a"]] == [0]
    assert [c for c, _ in boxes["1-a"]] == [1, 0]  # bag -> 1, shoe -> 0
    assert (merged / "images" / "train" / "1-a.jpg").is_file()
    with pytest.raises(LabelSetError, match="already exists"):
        merge_label_sets([first], merged)


def test_coco_export_has_pixel_boxes(tmp_path):
    out = write_label_set(_set(["shoe"], [("a", "val", [Box("shoe", (20, 10, 60, 50))])]), tmp_path / "set")
    coco = to_coco(out, "val")
    json.dumps(coco)  # plain JSON
    assert coco["categories"] == [{"id": 0, "name": "shoe"}]
    assert coco["images"][0]["width"] == 200
    assert coco["annotations"][0]["bbox"] == pytest.approx([20, 10, 40, 40])


def test_a_folder_without_a_card_is_not_a_label_set(tmp_path):
    with pytest.raises(LabelSetError, match="not a label set"):
        read_card(tmp_path)
