"""Cut a product out of its photo: the alpha channel when there is one, else subtraction of a plain background.

Catalog photos are usually one product on a transparent or plain studio background, so the cut-out
gives the product's exact box and shape without any model: the catalog teacher's boxes and the
composite scenes' objects both come from here. A photo whose background cannot be removed raises
`NoCutout` with a reason code, so a caller can count and report why photos were skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage

Box = tuple[float, float, float, float]

REASONS = ("no_plain_background", "empty", "fills_frame", "too_small")

# Alpha above this counts as object (anti-aliased halos and faint drop shadows stay out).
ALPHA_ON = 32
# Transparency is "meaningful" when at least this share of the pixels is clearly transparent.
_MIN_TRANSPARENT_SHARE = 0.01
# The border must be this uniform to count as a plain background (same rule as vision.detector.trim_box).
_PLAIN_BORDER_SHARE = 0.9
# An object whose box covers more than this share of the frame cannot be told from its background.
_FILLS_FRAME_SHARE = 0.95
# Parts smaller than this share of the frame are specks (JPEG noise, dust), not the product.
_SPECK_SHARE = 0.0002


class NoCutout(ValueError):
    """The product cannot be cut out of this image; `.reason` is one of REASONS."""

    def __init__(self, reason: str, detail: str = ""):
        if reason not in REASONS:
            raise ValueError(f"unknown cut-out failure reason {reason!r}")
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass(frozen=True)
class Cutout:
    """The product as RGBA cropped to its box; `box` is x0, y0, x1, y1 in pixels of the source image."""

    rgba: Image.Image
    box: Box
    method: Literal["alpha", "background"]


def cut_out(image: Image.Image, *, tolerance: int = 24, min_side: int = 4, min_share: float = 0.001) -> Cutout:
    """The product of a one-product photo on a transparent or plain background; NoCutout(reason) when impossible.

    tolerance: largest per-channel difference from the background colour still counted as background.
    min_side, min_share: an object narrower than min_side px or smaller than min_share of the frame is too_small.
    """
    width, height = image.size
    if width < 3 or height < 3:
        raise NoCutout("too_small", f"a {width}x{height} image")
    rgba = image.convert("RGBA")
    alpha = _meaningful_alpha(image, rgba)
    if alpha is not None:
        mask, method = _main_parts(alpha > ALPHA_ON), "alpha"
    else:
        mask, method = _background_mask(np.asarray(rgba.convert("RGB")), tolerance), "background"
    if not mask.any():
        raise NoCutout("empty", "nothing differs from the background")
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    x0, y0, x1, y1 = int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1
    if min(x1 - x0, y1 - y0) < min_side or mask.sum() < min_share * width * height:
        raise NoCutout("too_small", f"object box {x1 - x0}x{y1 - y0} in a {width}x{height} image")
    if method == "background" and (x1 - x0) * (y1 - y0) > _FILLS_FRAME_SHARE * width * height:
        raise NoCutout("fills_frame", "the object covers the whole frame; its background cannot be separated")
    box = (float(x0), float(y0), float(x1), float(y1))
    if method == "alpha":
        cut = rgba.crop((x0, y0, x1, y1))
    else:
        cut = rgba.copy()
        # Feathered by about a pixel, so a composite shows no hard, jagged outline.
        edge = Image.fromarray(mask.astype(np.uint8) * 255, "L").filter(ImageFilter.GaussianBlur(0.7))
        cut.putalpha(edge)
        cut = cut.crop((x0, y0, x1, y1))
    return Cutout(rgba=cut, box=box, method=method)


def _meaningful_alpha(image: Image.Image, rgba: Image.Image) -> np.ndarray | None:
    """The alpha channel when the image has one with real transparency, else None."""
    if image.mode not in ("RGBA", "LA", "PA") and not (image.mode == "P" and "transparency" in image.info):
        return None
    alpha = np.asarray(rgba.getchannel("A"))
    if (alpha <= ALPHA_ON).mean() < _MIN_TRANSPARENT_SHARE:
        return None  # an opaque image stored with an alpha channel: the background decides
    return alpha


def _background_mask(rgb: np.ndarray, tolerance: int) -> np.ndarray:
    """Pixels that differ from the median border colour, holes filled, specks removed."""
    border = np.concatenate([rgb[0], rgb[-1], rgb[1:-1, 0], rgb[1:-1, -1]]).astype(np.int16)
    background = np.median(border, axis=0)
    plain = (np.abs(border - background).max(axis=1) <= tolerance).mean()
    if plain < _PLAIN_BORDER_SHARE:
        raise NoCutout("no_plain_background", f"only {plain:.0%} of the border is one colour (a lifestyle photo?)")
    differs = np.abs(rgb.astype(np.int16) - background).max(axis=2) > tolerance
    # Closing seals small gaps in an outline; filling holes then keeps the inside of an object whose own
    # colour is the background's (a white shirt on white shows only its outline and folds). Specks of
    # JPEG noise are dropped as small parts rather than by an opening, which would cut thin parts
    # (a mast, a balloon's string, a lamp's stem) off the product.
    closed = ndimage.binary_closing(differs, structure=np.ones((3, 3), bool), border_value=0)
    return _main_parts(ndimage.binary_fill_holes(closed | differs))


def _main_parts(mask: np.ndarray) -> np.ndarray:
    """The mask without specks: parts smaller than _SPECK_SHARE of the frame, unless it is the only part.

    Separate strokes of one drawing (sparks round a cake, a compass rose's letters) are kept: they are
    part of the product photo's object and belong inside its box.
    """
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if count <= 1:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    keep = np.flatnonzero((sizes >= _SPECK_SHARE * mask.size) | (sizes == sizes.max())) + 1
    return np.isin(labels, keep)
