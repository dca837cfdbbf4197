"""make_thumbnail and thumbnail_scale: the stored WebP the dashboards show instead of fetching a tenant's URL."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from vision.image import THUMBNAIL_SIDE, make_thumbnail, thumbnail_scale


def _photo(width: int, height: int, mode: str = "RGB") -> Image.Image:
    """A smooth gradient with a dark block: enough structure that a wrong crop or flip would show."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), np.full_like(x, 128)], axis=-1)
    rgb[: height // 4, : width // 4] = 0  # top-left block
    return Image.fromarray(rgb.astype(np.uint8), "RGB").convert(mode)


def _decode(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


@pytest.mark.parametrize(("width", "height"), [(640, 480), (480, 640), (1000, 250), (256, 256)])
def test_longest_side_is_the_thumbnail_side_and_the_aspect_is_kept(width, height):
    thumb = _decode(make_thumbnail(_photo(width, height)))
    assert thumb.format == "WEBP" and thumb.mode == "RGB"
    assert max(thumb.size) == THUMBNAIL_SIDE
    # Pillow's thumbnail rounds the short side to the nearest pixel: within one of the exact ratio
    scale = THUMBNAIL_SIDE / max(width, height)
    assert abs(thumb.width - width * scale) <= 1 and abs(thumb.height - height * scale) <= 1


def test_a_small_image_is_never_enlarged():
    thumb = _decode(make_thumbnail(_photo(120, 80)))
    assert thumb.size == (120, 80)
    assert thumbnail_scale(120, 80) == 1.0


def test_the_pixels_are_the_images_scaled_down():
    photo = _photo(640, 480)
    thumb = _decode(make_thumbnail(photo))
    expected = np.asarray(photo.resize(thumb.size, Image.Resampling.LANCZOS), dtype=np.float32)
    # WebP at quality 80 is lossy: a mean error of a few grey levels, never a shifted or flipped picture
    assert np.abs(np.asarray(thumb, dtype=np.float32) - expected).mean() < 4.0
    assert np.asarray(thumb)[:10, :10].max() < 40  # the dark block is still top-left


def test_other_modes_become_rgb():
    for mode in ("L", "RGBA", "P"):
        assert _decode(make_thumbnail(_photo(300, 200, mode))).mode == "RGB"


def test_thumbnail_scale_maps_stored_pixels_to_thumbnail_pixels():
    assert thumbnail_scale(640, 480) == pytest.approx(256 / 640)
    assert thumbnail_scale(480, 1024) == pytest.approx(256 / 1024)
    assert thumbnail_scale(None, 480) == 1.0 and thumbnail_scale(640, 0) == 1.0  # size unknown: no scaling
    # a box stored in original pixels lands inside the thumbnail
    thumb = _decode(make_thumbnail(_photo(640, 480)))
    s = thumbnail_scale(640, 480)
    assert (640 * s, 480 * s) == pytest.approx(thumb.size, abs=1)
