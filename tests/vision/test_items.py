"""The item policy on hand-made box lists: whole image kept, filtering, de-duplication, caps, crops."""

from __future__ import annotations

import pytest
from PIL import Image

from vision.detector import Detection
from vision.items import crop_box, extract_items, iou, select_detections

W, H = 400, 300


def _det(box, score=0.9, label="bag", kind="item") -> Detection:
    return Detection(tuple(float(v) for v in box), label, score, kind)


def test_iou_reference_values():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0  # touching edges share no area
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)


def test_whole_image_item_is_kept_when_nothing_is_detected():
    image = Image.new("RGB", (W, H), "white")
    items = extract_items(image, [])
    assert len(items) == 1
    assert items[0].detection.kind == "whole"
    assert items[0].detection.box == (0, 0, W, H)
    assert items[0].crop.size == (W, H)


def test_a_trimmed_whole_box_from_the_detector_is_used():
    whole = _det((50, 40, 350, 260), 1.0, "image", "whole")
    (item,) = extract_items(Image.new("RGB", (W, H)), [whole])
    assert item.detection == whole and item.crop.size == (300, 220)


def test_low_score_and_small_boxes_are_dropped():
    dets = [
        _det((10, 10, 110, 110), 0.9, "keep"),
        _det((150, 10, 250, 110), 0.1, "low-score"),
        _det((300, 200, 310, 210), 0.9, "tiny"),  # 100 px^2 < 1 % of 120,000
    ]
    labels = [d.label for d in select_detections(W, H, dets, min_score=0.25, min_area=0.01)]
    assert labels == ["image", "keep"]


def test_overlapping_boxes_are_deduplicated_keeping_the_most_confident():
    dets = [
        _det((10, 10, 110, 110), 0.6, "suitcase"),
        _det((12, 11, 111, 112), 0.8, "handbag"),  # IoU ~0.95 with the first, higher score
        _det((60, 10, 160, 110), 0.7, "other"),  # IoU 0.33: a different item
    ]
    labels = [d.label for d in select_detections(W, H, dets, iou_threshold=0.7)]
    assert labels == ["image", "handbag", "other"]


def test_a_box_covering_the_whole_image_duplicates_the_whole_item():
    dets = [_det((0, 0, W, H - 5), 0.95, "table")]
    assert [d.kind for d in select_detections(W, H, dets)] == ["whole"]


def test_cap_keeps_the_whole_image_and_the_best_items():
    dets = [_det((i * 40, 0, i * 40 + 35, 100), score=0.3 + i * 0.05, label=f"b{i}") for i in range(10)]
    kept = select_detections(W, H, dets, max_items=4)
    assert [d.label for d in kept] == ["image", "b9", "b8", "b7"]


def test_items_rank_before_context_boxes():
    dets = [_det((0, 0, 100, 300), 0.99, "person", "context"), _det((200, 0, 300, 100), 0.4, "bag")]
    assert [d.label for d in select_detections(W, H, dets, max_items=2)] == ["image", "bag"]
    assert [d.label for d in select_detections(W, H, dets, max_items=3)] == ["image", "bag", "person"]


def test_boxes_are_clipped_to_the_image_and_degenerate_ones_dropped():
    dets = [_det((-20, -10, 100, 100), 0.9, "clipped"), _det((398, 10, 500, 200), 0.9, "sliver")]
    kept = select_detections(W, H, dets, min_area=0.0)
    assert [d.label for d in kept] == ["image", "clipped"]
    assert kept[1].box == (0.0, 0.0, 100.0, 100.0)


def test_crops_widen_fractional_boxes_to_whole_pixels():
    image = Image.new("RGB", (W, H))
    assert crop_box(image, (10.4, 20.6, 50.2, 60.0)).size == (41, 40)
    items = extract_items(image, [_det((10.4, 20.6, 150.2, 160.0))])
    assert [it.crop.size for it in items] == [(W, H), (141, 140)]


def test_max_items_below_one_is_refused():
    with pytest.raises(ValueError):
        select_detections(W, H, [], max_items=0)


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError):
        Detection((0, 0, 1, 1), "x", 1.0, "background")
