"""Safe image loading: bytes from the outside world -> one RGB PIL image, or one typed error."""

from __future__ import annotations

import hashlib
import io
import logging
import sys
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000
# Transparent product cut-outs are shown on white by storefronts; composite them the same way
# so the embedder sees what the shopper sees (black, Pillow's default, would shift every vector).
BACKGROUND = (255, 255, 255)
THUMBNAIL_SIDE = 256  # px: the longest side of the stored thumbnail
THUMBNAIL_QUALITY = 80  # WebP quality: ~5-15 kB for a product photo at 256 px


class ImageError(ValueError):
    """A file that cannot become an image; `reason` is a short machine code for the status column."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class LoadedImage:
    """A decoded RGB image (EXIF orientation applied, first frame) and the hash of its source bytes."""

    image: Image.Image
    content_hash: str
    width: int
    height: int


def make_thumbnail(image: Image.Image, side: int = THUMBNAIL_SIDE, quality: int = THUMBNAIL_QUALITY) -> bytes:
    """WebP bytes of `image` scaled so its longest side is at most `side` (never enlarged)."""
    thumb = image.convert("RGB")
    thumb.thumbnail((side, side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    thumb.save(out, format="WEBP", quality=quality, method=2)  # method 4: +45 % time for -3 % bytes
    return out.getvalue()


def thumbnail_scale(width: int | None, height: int | None, side: int = THUMBNAIL_SIDE) -> float:
    """The factor from original-image pixels to thumbnail pixels (item boxes are stored in original pixels)."""
    if not width or not height:
        return 1.0
    return min(1.0, side / max(width, height))


def content_hash(data: bytes) -> str:
    """Hex sha256 of the raw bytes: the identity used to skip re-processing an unchanged image.

    Bytes rather than decoded pixels: it is computable before (and without) decoding, so the
    ingest path can skip an unchanged image for the price of a hash; a re-encode with identical
    pixels is rare in catalogs and only costs one redundant re-embed.
    """
    return hashlib.sha256(data).hexdigest()


ORIENTATION_TAG = 0x0112  # EXIF Orientation


def load_image(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Decode untrusted bytes into an RGB image, or raise ImageError with a reason."""
    if not data:
        raise ImageError("empty", "empty image: the file has no bytes")
    if len(data) > max_bytes:
        raise ImageError("too_large", f"image too large: {len(data)} bytes > limit of {max_bytes}")
    try:
        im = pil_open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError("not_an_image", "not an image: the bytes are in no format Pillow can read") from None
    except Image.DecompressionBombError as exc:
        raise ImageError("too_many_pixels", f"image has too many pixels: {exc}") from None
    except Exception as exc:  # Pillow raises many types on hostile headers; all mean "bad file"
        raise ImageError("corrupt", f"corrupt image: {_describe(exc)}") from None

    # Checked from the header, before decoding, so a bomb never allocates its pixels. Our own
    # limit rather than Image.MAX_IMAGE_PIXELS: that is a process global and callers differ.
    width, height = im.size
    if width * height > max_pixels:
        raise ImageError("too_many_pixels", f"image has too many pixels: {width}x{height} > limit of {max_pixels}")
    try:
        im.seek(0)  # animations: the first frame is the product shot
        im.load()
        im = _apply_orientation(im)
        rgb = _to_rgb(im)
    except Image.DecompressionBombError as exc:
        raise ImageError("too_many_pixels", f"image has too many pixels: {exc}") from None
    except ImageError:
        raise
    except Exception as exc:  # truncated data, bad Huffman tables, broken zlib streams, ...
        raise ImageError("corrupt", f"corrupt image: {_describe(exc)}") from None
    return LoadedImage(image=rgb, content_hash=content_hash(data), width=rgb.width, height=rgb.height)


def pil_open(fp) -> Image.Image:
    """PIL.Image.open, even after ultralytics replaced it process-wide (see below)."""
    # ultralytics replaces PIL.Image.open process-wide with a wrapper that, on an unknown format,
    # tries to pip-install pi-heif and then fails with ImportError: a text file would be reported
    # as 'corrupt' (and an install attempted). Use the original opener it keeps.
    opener = Image.open
    module = getattr(opener, "__module__", "") or ""
    if module.startswith("ultralytics"):
        opener = getattr(sys.modules.get(module), "_image_open", opener)
    return opener(fp)


def _apply_orientation(im: Image.Image) -> Image.Image:
    try:
        if im.getexif().get(ORIENTATION_TAG, 1) == 1:
            return im  # upright: exif_transpose would still copy every pixel
        return ImageOps.exif_transpose(im)
    except Exception as exc:  # a malformed EXIF block should not cost us an otherwise fine photo
        log.warning("ignoring unreadable EXIF orientation: %s", _describe(exc))
        return im


def _to_rgb(im: Image.Image) -> Image.Image:
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return _high_depth_to_rgb(im)
    if mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, BACKGROUND)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    # CMYK (incl. Adobe's inverted CMYK JPEGs, which Pillow's decoder un-inverts), L, 1, P, YCbCr
    return im.convert("RGB")


def _high_depth_to_rgb(im: Image.Image) -> Image.Image:
    # Pillow's convert("RGB") clips 16-bit and float values at 255 (a near-white image);
    # rescale to 8 bits instead.
    arr = np.asarray(im, dtype=np.float64)
    if im.mode == "F":
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
    else:
        arr = arr / 257.0 if arr.max() > 255 else arr
    grey = np.clip(np.nan_to_num(arr), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, mode="L").convert("RGB")


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return text or type(exc).__name__
