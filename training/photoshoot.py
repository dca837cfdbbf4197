"""Photos of a product from its RGBA cut-out: a studio shot, and street shots that differ like a second real photo.

Studio: centred on white or light grey with a soft shadow, the whole product in frame. Street: the
same cut-out at another scale (0.35-0.9 of the frame), position, rotation (+-20 degrees) and mild
perspective, in a textured scene (a muted wall and table, often with another drawing enlarged and out
of focus behind), under other light (brightness, contrast, colour temperature, a directional ramp:
hues stay), sometimes partly hidden by another object or cut by the frame, a little blurred, JPEG
quality 60-90. Every random choice comes from the caller's numpy Generator.
"""

from __future__ import annotations

import colorsys
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from vision.image import pil_open

ALPHA_ON = 16  # alpha above this counts as part of the object
# A street shot's background (before the product and the light) has at most 20 % white-ish pixels.
MAX_WHITISH_STREET = 0.2


@dataclass(frozen=True)
class Drawing:
    """One usable cut-out of the source: where it is and its topic (category)."""

    path: Path
    source: str  # relative to the source root, posix
    category: str


def load_cutout(path: Path, max_side: int) -> Image.Image:
    """The drawing as RGBA, cropped to its alpha box and shrunk to at most max_side (never enlarged)."""
    with pil_open(path) as im:  # not ultralytics' replacement (vision/image.py)
        rgba = im.convert("RGBA")
    box = alpha_box(rgba)
    return fit(rgba.crop(box) if box else rgba, max_side, enlarge=False)


def whitish(rgb: np.ndarray) -> np.ndarray:
    """Per pixel of an (..., 3) array: near white or light grey (every channel >= 215, spread <= 20)."""
    return (rgb.min(axis=-1) >= 215) & (np.ptp(rgb, axis=-1) <= 20)


def studio_shot(product: Image.Image, size: int, rng: np.random.Generator) -> tuple[bytes, dict]:
    """Centred on white or light grey with a soft contact shadow, the whole product in frame."""
    grey = float(rng.uniform(236, 255))
    ramp = np.linspace(0, rng.uniform(0, 8), size, dtype=np.float32)[:, None, None]  # light falls off downward
    canvas = np.full((size, size, 3), grey, np.float32) - ramp
    scale = float(rng.uniform(0.72, 0.8))
    cut = fit(product, round(scale * size))
    x, y = (size - cut.width) // 2, (size - cut.height) // 2 - round(0.02 * size)
    layer = _place(cut, size, x, y)
    canvas = _shadow(canvas, layer, dx=0.012 * size, dy=0.03 * size, blur=0.025 * size, strength=0.22)
    canvas = _over(canvas, layer)
    return _jpeg(canvas, 92), _describe("studio", layer, cut, scale=scale, quality=92, background="plain")


def street_shot(
    product: Image.Image, size: int, rng: np.random.Generator, *, backdrop: Drawing, occluder: Drawing
) -> tuple[bytes, dict]:
    """The product in a textured scene, moved, turned, warped, relit, sometimes occluded or cut by the frame."""
    canvas = _scene(size, rng)
    info = {"background": "scene"}
    if rng.random() < 0.7:
        behind = _backdrop(canvas, load_cutout(backdrop.path, 2 * size), size, rng)
        # A white drawing filling the frame would make a second studio shot: keep the plain scene then.
        if whitish(behind).mean() <= MAX_WHITISH_STREET:
            canvas = behind
            info.update(background="scene+drawing", background_source=backdrop.source)
    scale = float(rng.uniform(0.35, 0.9))
    angle = float(rng.uniform(-20, 20))
    cut = _warp(fit(product, round(scale * size)), rng)
    cut = cut.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    cut = cut.crop(alpha_box(cut) or (0, 0, cut.width, cut.height))
    cropped = rng.random() < 0.25
    x, y = _position(cut, size, rng, cut_off=float(rng.uniform(0.1, 0.3)) if cropped else 0.0)
    layer = _place(cut, size, x, y)
    if rng.random() < 0.6:
        canvas = _shadow(
            canvas,
            layer,
            dx=rng.uniform(-0.03, 0.03) * size,
            dy=rng.uniform(0.01, 0.04) * size,
            blur=0.03 * size,
            strength=rng.uniform(0.15, 0.35),
        )
    canvas = _over(canvas, layer)
    cover = None
    if rng.random() < 0.3:
        cover = _occluder(load_cutout(occluder.path, size), layer, cut, (x, y), size, rng)
        if cover is not None:
            canvas = _over(canvas, cover)
            info["occluder_source"] = occluder.source
    canvas = _relight(canvas, rng)
    if rng.random() < 0.5:
        radius = float(rng.uniform(0.3, 1.1)) * size / 256
        canvas = np.asarray(_image(canvas).filter(ImageFilter.GaussianBlur(radius)), np.float32)
    canvas = canvas + rng.normal(0, rng.uniform(0, 3.5), canvas.shape).astype(np.float32)  # sensor noise
    quality = int(rng.integers(60, 91))
    shot = _describe("street", layer, cut, cover, scale=scale, quality=quality, rotation=angle, cropped=cropped, **info)
    return _jpeg(canvas, quality), shot


def _scene(size: int, rng: np.random.Generator) -> np.ndarray:
    """A wall and (usually) a table or floor: muted colours, low-frequency mottling, grain."""
    # Muted (saturation 0.12-0.4) and never light enough to pass for a studio's white.
    wall = _hsv(rng.random(), rng.uniform(0.12, 0.4), rng.uniform(0.3, 0.72))
    floor = _hsv(rng.random(), rng.uniform(0.12, 0.45), rng.uniform(0.25, 0.7))
    horizon = int(rng.uniform(0.45, 0.85) * size) if rng.random() < 0.75 else size
    canvas = np.empty((size, size, 3), np.float32)
    canvas[:horizon], canvas[horizon:] = wall, floor
    mottle = _noise(rng, 6, size) * rng.uniform(10, 28)
    grain = _noise(rng, size // 2, size) * rng.uniform(2, 7)
    canvas += (mottle + grain)[:, :, None]
    if horizon < size and rng.random() < 0.5:  # wood or fabric grain on the table: long horizontal streaks
        streaks = _noise(rng, (max(2, size // 6), 4), size)[horizon:] * rng.uniform(5, 12)
        canvas[horizon:] += streaks[:, :, None]
    return canvas


def _backdrop(canvas: np.ndarray, drawing: Image.Image, size: int, rng: np.random.Generator) -> np.ndarray:
    """Another drawing, enlarged past the frame and out of focus, behind the product."""
    big = fit(drawing, round(rng.uniform(1.0, 2.2) * size))
    x = int(rng.integers(min(0, size - big.width), max(0, size - big.width) + 1))
    y = int(rng.integers(min(0, size - big.height), max(0, size - big.height) + 1))
    layer = _place(big, size, x, y).filter(ImageFilter.GaussianBlur(rng.uniform(2.5, 6) * size / 256))
    rgba = np.asarray(layer, np.float32)
    rgba[..., :3] = rgba[..., :3] * 0.85 + canvas * 0.15  # out of focus and lit by the room
    return _over(canvas, Image.fromarray(rgba.clip(0, 255).astype(np.uint8), "RGBA"))


def _warp(cut: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A mild perspective warp: each corner moves up to 8 % of the side, as a camera tilted off-axis."""
    w, h = cut.size
    corners = np.array([(0, 0), (w, 0), (w, h), (0, h)], np.float64)
    moved = corners + rng.uniform(-0.08, 0.08, (4, 2)) * (w, h)
    moved -= moved.min(axis=0)
    out_w, out_h = np.ceil(moved.max(axis=0)).astype(int)
    rows = []
    for (X, Y), (x, y) in zip(moved, corners, strict=True):  # output (X, Y) -> input (x, y)
        rows.append([X, Y, 1, 0, 0, 0, -x * X, -x * Y])
        rows.append([0, 0, 0, X, Y, 1, -y * X, -y * Y])
    coeffs = np.linalg.solve(np.array(rows), corners.reshape(-1))
    return cut.transform((int(out_w), int(out_h)), Image.Transform.PERSPECTIVE, tuple(coeffs), Image.Resampling.BICUBIC)


def _position(cut: Image.Image, size: int, rng: np.random.Generator, cut_off: float) -> tuple[int, int]:
    """Top-left corner: inside the frame, or with `cut_off` of the product past one edge."""
    x = int(rng.integers(min(0, size - cut.width), max(0, size - cut.width) + 1))
    y = int(rng.integers(min(0, size - cut.height), max(0, size - cut.height) + 1))
    if cut_off:
        side = int(rng.integers(4))
        x = -round(cut_off * cut.width) if side == 0 else size - round((1 - cut_off) * cut.width) if side == 1 else x
        y = -round(cut_off * cut.height) if side == 2 else size - round((1 - cut_off) * cut.height) if side == 3 else y
    return x, y


def _occluder(
    thing: Image.Image, layer: Image.Image, cut: Image.Image, at: tuple[int, int], size: int, rng: np.random.Generator
) -> Image.Image | None:
    """Another object in front of the product covering 5-35 % of what shows of it, or None if none fits."""
    thing = fit(thing, round(rng.uniform(0.35, 0.6) * max(cut.size)))
    mine = np.asarray(layer.getchannel("A"), np.float32) / 255
    shown = mine.sum()
    cx, cy = at[0] + cut.width / 2, at[1] + cut.height / 2
    for _ in range(8):
        theta = rng.uniform(0, 2 * np.pi)
        reach = rng.uniform(0.3, 0.6)
        ox = round(cx + np.cos(theta) * reach * cut.width - thing.width / 2)
        oy = round(cy + np.sin(theta) * reach * cut.height - thing.height / 2)
        cover = _place(thing, size, ox, oy)
        covered = (mine * np.asarray(cover.getchannel("A"), np.float32) / 255).sum() / max(shown, 1.0)
        if 0.05 <= covered <= 0.35:
            return cover
    return None


def _relight(canvas: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Other light: brightness, contrast, colour temperature and a soft directional ramp; hues stay."""
    size = canvas.shape[0]
    t = rng.uniform(-0.08, 0.08)  # warm (+) or cool (-): scale red and blue in opposite directions
    canvas = canvas * np.array([1 + t, 1 + t / 4, 1 - t], np.float32)
    mean = canvas.mean()
    canvas = (canvas - mean) * rng.uniform(0.8, 1.15) + mean
    canvas = canvas * rng.uniform(0.8, 1.15)
    theta = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    ramp = 1 + rng.uniform(0.05, 0.15) * (np.cos(theta) * xx + np.sin(theta) * yy) * 2
    return canvas * ramp[:, :, None]


# --- pixels -------------------------------------------------------------------------------------


def _describe(kind: str, layer: Image.Image, cut: Image.Image, cover: Image.Image | None = None, **extra) -> dict:
    """The product's visible box and share in this photo (exact, from the alpha masks) plus how it was made."""
    alpha = np.asarray(layer.getchannel("A"), np.float32) / 255
    if cover is not None:
        alpha = alpha * (1 - np.asarray(cover.getchannel("A"), np.float32) / 255)
    whole = np.asarray(cut.getchannel("A"), np.float32).sum() / 255
    ys, xs = np.nonzero(alpha > 0.5)
    box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1] if len(xs) else None
    rounded = {k: round(v, 3) if isinstance(v, float) else v for k, v in extra.items()}
    return {"kind": kind, "box": box, "visible": round(float(alpha.sum() / max(whole, 1.0)), 3), **rounded}


def _shadow(canvas: np.ndarray, layer: Image.Image, *, dx: float, dy: float, blur: float, strength: float):
    """Darken the canvas under a blurred, offset copy of the product's silhouette."""
    mask = layer.getchannel("A").transform(
        layer.size, Image.Transform.AFFINE, (1, 0, -dx, 0, 1, -dy), Image.Resampling.BILINEAR
    )
    shade = np.asarray(mask.filter(ImageFilter.GaussianBlur(blur)), np.float32) / 255
    return canvas * (1 - strength * shade)[:, :, None]


def _over(canvas: np.ndarray, layer: Image.Image) -> np.ndarray:
    """Alpha-composite an RGBA layer of the canvas's size over the float RGB canvas."""
    rgba = np.asarray(layer, np.float32)
    a = rgba[..., 3:] / 255
    return canvas * (1 - a) + rgba[..., :3] * a


def _place(cut: Image.Image, size: int, x: int, y: int) -> Image.Image:
    """A transparent frame-sized layer with the cut-out at (x, y), clipped at the edges."""
    layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    layer.paste(cut, (x, y))
    return layer


def fit(im: Image.Image, side: int, enlarge: bool = True) -> Image.Image:
    """Resize so the long side is `side` px, keeping the aspect ratio (Pillow premultiplies alpha)."""
    factor = side / max(im.size)
    if factor >= 1 and not enlarge:
        return im
    new = (max(1, round(im.width * factor)), max(1, round(im.height * factor)))
    return im.resize(new, Image.Resampling.LANCZOS)


def alpha_box(rgba: Image.Image) -> tuple[int, int, int, int] | None:
    """The box of the pixels with alpha above ALPHA_ON, or None for an empty drawing."""
    return rgba.getchannel("A").point(lambda a: 255 if a > ALPHA_ON else 0).getbbox()


def _noise(rng: np.random.Generator, cells: int | tuple[int, int], size: int) -> np.ndarray:
    """Smooth noise in [-1, 1]: a random grid of cells (rows, columns) enlarged bicubically to size x size."""
    grid = rng.uniform(-1, 1, (cells, cells) if isinstance(cells, int) else cells).astype(np.float32)
    return np.asarray(Image.fromarray(grid, "F").resize((size, size), Image.Resampling.BICUBIC))


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h, s, v), np.float32) * 255


def _image(canvas: np.ndarray) -> Image.Image:
    return Image.fromarray(np.round(canvas).clip(0, 255).astype(np.uint8), "RGB")


def _jpeg(canvas: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    _image(canvas).save(buf, "JPEG", quality=quality)
    return buf.getvalue()
