"""The whole-image detector: trimming a studio shot to its product, leaving other photos whole."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from vision.detector import WholeImageDetector, create_detector, trim_box
from vision.model import UnknownBackend


def _studio_shot(size=(600, 400), product=(220, 90, 430, 330)) -> Image.Image:
    """A product (a two-tone bag with a handle) on white, through a JPEG round-trip for realistic noise."""
    im = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(im)
    x0, y0, x1, y1 = product
    draw.rectangle((x0, y0 + 60, x1, y1), fill=(150, 60, 40))
    draw.rectangle((x0 + 20, y0 + 150, x1 - 20, y1 - 20), fill=(120, 40, 30))
    draw.arc((x0 + 40, y0, x1 - 40, y0 + 120), 180, 360, fill=(90, 30, 20), width=8)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=85)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def test_trim_finds_the_product_on_white():
    product = (220, 90, 430, 330)
    box = trim_box(_studio_shot(product=product), margin=0.0)
    assert box is not None
    # Within 4 px of the drawn extent (the arc starts at the top of its bounding ellipse).
    assert np.allclose(box, product, atol=4), box


def test_a_large_photo_is_trimmed_on_a_reduced_copy_within_the_reduction_factor():
    # 1,800 px: reduced 3x before trimming, so the box is exact to 3 px (plus the arc's 4).
    product = (660, 270, 1290, 990)
    box = trim_box(_studio_shot(size=(1800, 1200), product=product), margin=0.0)
    assert box is not None and np.allclose(box, product, atol=4 + 3), box


def test_trim_adds_the_margin_and_stays_inside_the_image():
    x0, y0, x1, y1 = trim_box(_studio_shot(product=(5, 5, 595, 395)), margin=0.02)
    assert (x0, y0) == (0, 0) and (x1, y1) == (600, 400)
    tight = trim_box(_studio_shot(), margin=0.0)
    padded = trim_box(_studio_shot(), margin=0.02)
    assert padded[0] == pytest.approx(tight[0] - 12) and padded[3] == pytest.approx(tight[3] + 8)


def test_a_photo_without_plain_background_stays_whole(photos):
    assert trim_box(photos["bus"]) is None
    (dets,) = WholeImageDetector().detect([photos["bus"]])
    assert dets[0].box == (0, 0, 810, 1080) and dets[0].kind == "whole"


def test_a_blank_image_stays_whole():
    assert trim_box(Image.new("RGB", (50, 50), "white")) is None


def test_detector_returns_one_whole_detection_per_image():
    images = [_studio_shot(), Image.new("RGB", (1, 1))]
    result = create_detector("whole-image", cache_dir=".").detect(images)
    assert [len(r) for r in result] == [1, 1]
    assert result[0][0].kind == "whole" and result[0][0].score == 1.0
    assert result[0][0].box[2] - result[0][0].box[0] < 300  # trimmed, not 600 wide
    assert result[1][0].box == (0, 0, 1, 1)


def test_untrimmed_option():
    (dets,) = WholeImageDetector(trim=False).detect([_studio_shot()])
    assert dets[0].box == (0, 0, 600, 400)


def test_unknown_detector():
    with pytest.raises(UnknownBackend, match="whole-image"):
        create_detector("sam", cache_dir=".")
