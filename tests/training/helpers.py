"""A tiny source of synthetic RGBA cut-outs in category subfolders, so tests never need openclipart installed."""

from __future__ import annotations

import colorsys
from pathlib import Path

from PIL import Image, ImageDraw

# One saturated hue per category, 120 degrees apart, so a test can find a product's pixels by hue.
HUES = {"food/fruit": 0.0, "toys": 1 / 3, "people/clothing": 2 / 3}
SHAPES = ("ellipse", "rectangle", "triangle", "diamond")


def rgb(hue: float, value: float) -> tuple[int, int, int]:
    """A fully saturated colour of this hue and value, as 0-255 integers."""
    return tuple(round(c * 255) for c in colorsys.hsv_to_rgb(hue, 0.9, value))


def write_cutout_tree(root: Path, per_category: int = 4, side: int = 200, hues: dict | None = None) -> Path:
    """root/<category>/<shape>_<n>.png: coloured shapes on a transparent canvas, with a darker stripe each."""
    for category, hue in (hues or HUES).items():
        folder = root / category
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(per_category):
            im = Image.new("RGBA", (side, side), (0, 0, 0, 0))
            draw = ImageDraw.Draw(im)
            shape, m = SHAPES[n % len(SHAPES)], side // 8 + n
            box = (m, m, side - m, side - m)
            fill = rgb(hue, 0.95 - 0.05 * (n % 3)) + (255,)
            if shape == "ellipse":
                draw.ellipse(box, fill=fill)
            elif shape == "rectangle":
                draw.rounded_rectangle(box, radius=side // 10, fill=fill)
            elif shape == "triangle":
                draw.polygon([(side // 2, m), (side - m, side - m), (m, side - m)], fill=fill)
            else:
                draw.polygon([(side // 2, m), (side - m, side // 2), (side // 2, side - m), (m, side // 2)], fill=fill)
            # A darker band of the same hue: the drawing is not one flat colour, and its hue stays one.
            band = Image.new("L", (side, side), 0)
            ImageDraw.Draw(band).rectangle((0, side // 2 - side // 10, side, side // 2 + side // 10), fill=255)
            alpha = im.getchannel("A")
            im.paste(rgb(hue, 0.55) + (255,), (0, 0), Image.composite(band, Image.new("L", band.size, 0), alpha))
            im.save(folder / f"{shape}_{n:02d}.png")
    return root


def write_unusable(root: Path) -> dict[str, Path]:
    """One drawing per skip reason of the cut-out filter, in a category of their own."""
    folder = root / "junk"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    opaque = Image.new("RGB", (160, 160), (200, 40, 40))
    opaque.save(out.setdefault("no_alpha", folder / "photo.png"))
    Image.new("RGBA", (160, 160), (10, 200, 10, 255)).save(out.setdefault("no_transparent_area", folder / "poster.png"))
    Image.new("RGBA", (160, 160), (0, 0, 0, 0)).save(out.setdefault("empty", folder / "blank.png"))
    tiny = Image.new("RGBA", (160, 160), (0, 0, 0, 0))
    ImageDraw.Draw(tiny).ellipse((60, 60, 100, 100), fill=(200, 40, 40, 255))
    tiny.save(out.setdefault("tiny", folder / "bead.png"))
    hatch = Image.new("RGBA", (160, 160), (0, 0, 0, 0))
    for at in range(10, 151, 10):  # a cross-hatched square of 2-px strokes: no area a product could fill
        ImageDraw.Draw(hatch).line((at, 10, at, 150), fill=(30, 30, 30, 255), width=2)
        ImageDraw.Draw(hatch).line((10, at, 150, at), fill=(90, 60, 30, 255), width=2)
    hatch.save(out.setdefault("line_art", folder / "hatching.png"))
    flat = Image.new("RGBA", (160, 160), (0, 0, 0, 0))
    ImageDraw.Draw(flat).ellipse((10, 10, 150, 150), fill=(0, 0, 0, 255))
    flat.save(out.setdefault("flat", folder / "silhouette.png"))
    (folder / "notes.png").write_bytes(b"not a png")
    out["unreadable"] = folder / "notes.png"
    return out


def write_product_folder(
    root: Path, *, categories: int = 3, products: int = 4, photos: int = 2, side: int = 64, seed: int = 0
) -> Path:
    """An ImageFolder of products: root/<product>/<k>.png plus products.json naming each one's category.

    A category is a shape, a product one colour and size of it; its photos move, scale and tint it."""
    import json
    import random

    rng = random.Random(seed)
    meta = {}
    for c in range(categories):
        for p in range(products):
            name = f"c{c}p{p}"
            hue, size = rng.random(), rng.uniform(0.45, 0.8)
            meta[name] = {"category": f"shape-{SHAPES[c % len(SHAPES)]}", "title": name}
            folder = root / name
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(photos):
                tint = tuple(rng.randint(200, 255) for _ in range(3))
                im = Image.new("RGB", (side, side), tint if k else (255, 255, 255))
                draw = ImageDraw.Draw(im)
                s = side * size * rng.uniform(0.85, 1.0)
                x0, y0 = rng.uniform(0, side - s), rng.uniform(0, side - s)
                box = (x0, y0, x0 + s, y0 + s)
                fill = rgb(hue, 0.9)
                shape = SHAPES[c % len(SHAPES)]
                if shape == "ellipse":
                    draw.ellipse(box, fill=fill)
                elif shape == "rectangle":
                    draw.rectangle(box, fill=fill)
                elif shape == "triangle":
                    draw.polygon([((box[0] + box[2]) / 2, box[1]), (box[2], box[3]), (box[0], box[3])], fill=fill)
                else:
                    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
                    draw.polygon([(cx, box[1]), (box[2], cy), (cx, box[3]), (box[0], cy)], fill=fill)
                im.save(folder / f"{k}.png")
    (root / "products.json").write_text(json.dumps(meta))
    return root
