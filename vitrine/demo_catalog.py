"""A demo catalog that looks like a shop's: ~500 products with real pictures, offline after install.

The pictures are the public-domain drawings of Debian's `openclipart-png` (released under the Creative
Commons Public Domain Dedication, see /usr/share/doc/openclipart-png/copyright), or any folder of RGBA
PNGs in category subfolders. A product is one drawing in one colourway; about a third of the drawings
also come in a second colourway (a hue rotation), a separate product with the same `design`
attribute, so "same design, other colour" pairs exist. Each product has 1 to 3 studio-like photos:
the cut-out on a plain light background at another scale, position and small rotation.

Attributes are ground truth from the source, never from a model: `design` (the drawing), `colour`
(the dominant hue of the colourway, e.g. "blue-ish", or "grey"), `hue_shift` (degrees),
`subject` (words of the drawing's file name) and `source` (the drawing's path). Prices are seeded and
plausible per category. Output: `OUT/images/*.jpg`, `OUT/catalog.jsonl` (one core.contracts.Product
per line, image_urls relative to images/) and `OUT/manifest.json`; a build with the same source,
size and seed is reused, and the same arguments give the same ids and byte-identical files.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import re
import shutil
import subprocess
import time
import zlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL
from PIL import Image, ImageFilter

from training.multiview import NON_PRODUCT_TOPICS, OPENCLIPART_DIR, scan_drawings, title_of
from training.photoshoot import Drawing, fit, load_cutout
from vision.datasets import DatasetError

log = logging.getLogger(__name__)

SOURCE_ENV = "VITRINE_SAMPLE_IMAGES"
PACKAGE = "openclipart-png"
FORMAT = 2  # bump when the output for the same arguments changes
SIDE = 384  # photos are SIDE x SIDE JPEGs
QUALITY = 85
MARKER = ".vitrine-demo"  # in images/: a folder a build may replace (a dot file: the image server skips it)
TWIN_SHARE = 1 / 3  # drawings that also get a second colourway
MIN_SATURATED = 0.3  # a drawing gets a second colourway only if this share of it has a visible hue

# openclipart topics -> a shop's category (the longest matching topic wins); other topics are not used.
TOPIC_CATEGORIES = {
    "food/fruit": "fruit & vegetables",
    "food/vegetables": "fruit & vegetables",
    "food": "groceries",
    "food/beverages": "drinks",
    "food/desserts": "desserts",
    "people/clothing": "clothing",
    "recreation/toys": "toys & games",
    "tools/toys": "toys & games",
    "recreation/games": "toys & games",
    "plants": "flowers & plants",
    "animals": "animals",
    "recreation/music": "music",
    "recreation/sports": "sports",
    "recreation/party": "party & seasonal",
    "recreation/holiday": "party & seasonal",
    "decorations": "party & seasonal",
    "transportation": "vehicles",
    "computer": "electronics",
    "electronics": "electronics",
    "office/telephone": "electronics",
    "office": "office & school",
    "education": "office & school",
    "tools": "tools",
    "buildings/furniture": "home",
    "containers": "home",
}
EXCLUDE = (*NON_PRODUCT_TOPICS, "tools/weapons", "computer/folders")
# (low, high) EUR per category; a price is log-uniform in it, ending in .x9 or .99.
PRICES = {
    "fruit & vegetables": (0.5, 6),
    "groceries": (1, 15),
    "drinks": (1, 30),
    "desserts": (1.5, 13),
    "clothing": (10, 150),
    "toys & games": (5, 60),
    "flowers & plants": (4, 50),
    "animals": (5, 40),
    "music": (10, 500),
    "sports": (8, 200),
    "party & seasonal": (2, 30),
    "vehicles": (10, 90),
    "electronics": (10, 900),
    "office & school": (1, 50),
    "tools": (5, 130),
    "home": (10, 300),
}
DEFAULT_PRICES = (5, 100)
# Hue names by the upper end of their range in degrees (red wraps round).
HUE_NAMES = (
    (15, "red"),
    (40, "orange"),
    (70, "yellow"),
    (160, "green"),
    (195, "teal"),
    (255, "blue"),
    (290, "purple"),
    (345, "pink"),
    (360, "red"),
)


class SourceNotFound(DatasetError):
    """No drawings to build the demo catalog from; the message says what to install and how."""


@dataclass(frozen=True)
class DemoCatalog:
    """A built (or reused) demo catalog: the products as feed dicts and where the files are."""

    out_dir: Path
    source: Path
    products: list[dict]
    categories: dict[str, int]  # products per category
    seed: int
    seconds: float = 0.0
    reused: bool = False

    @property
    def images_dir(self) -> Path:
        return self.out_dir / "images"

    @property
    def feed_path(self) -> Path:
        return self.out_dir / "catalog.jsonl"

    @property
    def manifest_path(self) -> Path:
        return self.out_dir / "manifest.json"


# --- the source ---------------------------------------------------------------------------------


def find_source(
    data_dir: Path,
    *,
    system_dir: Path = OPENCLIPART_DIR,
    environ: Mapping[str, str] | None = None,
    timeout_s: float = 300.0,
) -> Path:
    """Where the drawings are: $VITRINE_SAMPLE_IMAGES when set (an explicit choice wins), the system's
    openclipart, or a private copy fetched with `apt-get download` + `dpkg -x` into data_dir/openclipart
    (no root needed, reused)."""
    environ = os.environ if environ is None else environ
    tried = []
    if value := environ.get(SOURCE_ENV):
        if _has_pngs(Path(value)):
            return Path(value)
        tried.append(f"{SOURCE_ENV}={value} is not a folder of PNGs in category subfolders")
    if _has_pngs(system_dir):
        return system_dir
    tried.append(f"{system_dir} not found")
    local = Path(data_dir) / "openclipart"
    extracted = local / OPENCLIPART_DIR.relative_to("/")
    if _has_pngs(extracted):
        return extracted
    problem = _download(local, timeout_s)
    if problem is None and _has_pngs(extracted):
        return extracted
    tried.append(problem or f"the package held no drawings at {extracted}")
    raise SourceNotFound(
        "no drawings for the demo catalog: "
        + "; ".join(tried)
        + f". Install them with `sudo apt-get install {PACKAGE}` (Debian/Ubuntu, 131 MB), or without root "
        f"`apt-get download {PACKAGE} && dpkg -x {PACKAGE}_*.deb DIR` and set "
        f"{SOURCE_ENV}=DIR/usr/share/openclipart/png (any folder of RGBA PNGs in category subfolders works)"
    )


def _has_pngs(folder: Path) -> bool:
    return folder.is_dir() and next(folder.glob("*/**/*.png"), None) is not None


def _download(local: Path, timeout_s: float) -> str | None:
    """Fetch and unpack the package into `local`; None when done, else what went wrong."""
    apt, dpkg = shutil.which("apt-get"), shutil.which("dpkg")
    if not apt or not dpkg:
        return "apt-get/dpkg not found, so it could not be downloaded"
    partial = local.with_name(local.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        log.info("downloading %s with apt-get (at most %.0f s)", PACKAGE, timeout_s)
        deadline = time.monotonic() + timeout_s
        subprocess.run([apt, "download", PACKAGE], cwd=partial, check=True, capture_output=True, timeout=timeout_s)
        debs = sorted(partial.glob(f"{PACKAGE}_*.deb"))
        if not debs:
            return f"`apt-get download {PACKAGE}` wrote no .deb"
        remaining = max(1.0, deadline - time.monotonic())
        cmd = [dpkg, "-x", str(debs[0]), str(partial / "root")]
        subprocess.run(cmd, check=True, capture_output=True, timeout=remaining)
        shutil.rmtree(local, ignore_errors=True)
        (partial / "root").rename(local)
        return None
    except subprocess.TimeoutExpired as e:
        return f"`{Path(e.cmd[0]).name} {e.cmd[1]}` took over {timeout_s:.0f} s"
    except subprocess.CalledProcessError as e:
        tail = (e.stderr or b"").decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
        return f"`{Path(e.cmd[0]).name} {e.cmd[1]}` failed ({tail[0]})"
    except OSError as e:
        return f"downloading {PACKAGE} failed ({e})"
    finally:
        shutil.rmtree(partial, ignore_errors=True)


# --- the build ----------------------------------------------------------------------------------


def build_demo_catalog(
    out_dir: Path,
    *,
    source: Path | None = None,
    n_products: int = 520,
    seed: int = 0,
    min_categories: int = 8,
    min_per_category: int = 12,
    data_dir: Path | None = None,
) -> DemoCatalog:
    """Write n_products products (images, catalog.jsonl, manifest.json) into out_dir, or reuse a
    build there of the same source, size and seed. Without a source, find_source(data_dir or out_dir)."""
    started = time.perf_counter()
    out_dir = Path(out_dir)
    if n_products < 1:
        raise DatasetError(f"n_products must be at least 1, got {n_products}")
    source = Path(source) if source is not None else find_source(Path(data_dir or out_dir))
    if not _has_pngs(source):
        raise SourceNotFound(f"{source} is not a folder of PNGs in category subfolders")
    key = {
        "format": FORMAT,
        "source": str(source.resolve()),
        "n_products": n_products,
        "seed": seed,
        "min_per_category": min_per_category,
    }
    if (reused := _reuse(out_dir, key)) is not None:
        return reused
    if (out_dir / "images").exists() and not (out_dir / "images" / MARKER).is_file():
        raise DatasetError(f"{out_dir / 'images'} exists and was not written by a demo catalog build: pick another")
    drawings, categories = _usable(source, min_per_category)
    if len(set(categories.values())) < min_categories:
        raise DatasetError(
            f"{source} has {len(set(categories.values()))} categories with >= {min_per_category} usable "
            f"cut-outs; the demo catalog needs {min_categories}"
        )
    order = _round_robin(drawings, categories, seed)
    products, photos = _make_products(order, categories, n_products, seed)
    if len(products) < n_products:
        raise DatasetError(
            f"{source} has {len(order)} usable cut-outs in {len(set(categories.values()))} categories: "
            f"enough for {len(products)} products, not {n_products}"
        )
    counts = dict(sorted(Counter(p["category"] for p in products).items()))
    _write(out_dir, products, photos, {**key, "products": len(products), "categories": counts})
    seconds = round(time.perf_counter() - started, 1)
    log.info("demo catalog: %d products in %d categories in %.1f s", len(products), len(counts), seconds)
    return DemoCatalog(out_dir, source, products, counts, seed, seconds=seconds)


def catalog_events(catalog: DemoCatalog, tenant_id: str, base_url: str, *, version: int = 1) -> list[dict]:
    """A product.upserted webhook event per product, its images served from base_url."""
    base = base_url.rstrip("/")
    events = []
    for p in catalog.products:
        product = {**p, "version": version, "image_urls": [f"{base}/{name}" for name in p["image_urls"]]}
        events.append(
            {
                "event_id": f"{tenant_id}-{p['id']}-v{version}",
                "tenant_id": tenant_id,
                "type": "product.upserted",
                "product": product,
            }
        )
    return events


def category_of(topic: str, mapping: Mapping[str, str] = TOPIC_CATEGORIES) -> str | None:
    """The shop category of an openclipart topic (longest matching topic), or None when unused."""
    parts = topic.split("/")
    for n in range(len(parts), 0, -1):
        if (name := mapping.get("/".join(parts[:n]))) is not None:
            return name
    return None


def _usable(source: Path, min_per_category: int) -> tuple[list[Drawing], dict[str, str]]:
    """The usable cut-outs and topic -> category, for categories with enough of them.

    A source with openclipart's topics uses TOPIC_CATEGORIES; any other uses its top-level folders."""
    tops = {p.name for p in source.iterdir() if p.is_dir()}
    if tops & {t.split("/")[0] for t in TOPIC_CATEGORIES}:
        drawings = scan_drawings(source, EXCLUDE, include=tuple(TOPIC_CATEGORIES))[0]
        topic_category = {d.category: category_of(d.category) for d in drawings}
    else:
        drawings = scan_drawings(source)[0]
        topic_category = {d.category: d.category.split("/")[0].replace("_", " ") for d in drawings}
    per_category = Counter(topic_category[d.category] for d in drawings)
    kept = {t: c for t, c in topic_category.items() if per_category[c] >= min_per_category}
    return [d for d in drawings if d.category in kept], kept


def _round_robin(drawings: list[Drawing], categories: dict[str, str], seed: int) -> list[Drawing]:
    """All drawings, one category after another in turn, each category's in a seeded order."""
    rng = np.random.default_rng(seed)
    pools: dict[str, list[Drawing]] = {}
    for d in drawings:  # drawings come sorted by path: the pools and their shuffles are reproducible
        pools.setdefault(categories[d.category], []).append(d)
    queues = [[pool[i] for i in rng.permutation(len(pool))] for _, pool in sorted(pools.items())]
    order = []
    for turn in range(max(map(len, queues), default=0)):
        order.extend(q[turn] for q in queues if turn < len(q))
    return order


def _make_products(
    order: list[Drawing], categories: dict[str, str], n_products: int, seed: int
) -> tuple[list[dict], dict[str, list[bytes]]]:
    """Walk the drawings in order: each is a product, a colourful one every third also a second
    colourway, until n_products. Returns the feed dicts and each product's JPEGs."""
    products: list[dict] = []
    photos: dict[str, list[bytes]] = {}
    twins, taken = 0, set()
    for designs, drawing in enumerate(order, start=1):
        if len(products) >= n_products:
            break
        design = _design_id(drawing.source, taken)
        category = categories[drawing.category]
        rng = np.random.default_rng([seed, zlib.crc32(drawing.source.encode())])
        cutout = load_cutout(drawing.path, SIDE)
        subject = " ".join(title_of(drawing.path).split()[:4])
        price = _price(category, rng)
        # Every colourway is named by its dominant hue (ground truth from the pixels, not a model), so a
        # shared colour means a shared look; "grey" for drawings without a visible hue.
        variants = [(f"{dominant_hue(cutout)}-ish" if _colourful(cutout) else "grey", 0, cutout)]
        if twins < TWIN_SHARE * designs and len(products) + 2 <= n_products and _colourful(cutout):
            shift = int(rng.integers(90, 271))
            recoloured = rotate_hue(cutout, shift)
            variants.append((f"{dominant_hue(recoloured)}-ish", shift, recoloured))
            twins += 1
        for colour, shift, image in variants:
            product_id = design if shift == 0 else f"{design}--{colour.removesuffix('-ish')}"
            n_photos = 1 + int(rng.choice(3, p=(0.6, 0.25, 0.15)))
            photos[product_id] = [product_shot(image, rng, first=k == 0) for k in range(n_photos)]
            products.append(
                {
                    "id": product_id,
                    "version": 1,
                    "title": f"{subject} ({colour})",
                    "category": category,
                    "price": price,
                    "currency": "EUR",
                    "in_stock": bool(rng.random() < 0.92),
                    "image_urls": [f"{product_id}-{k}.jpg" for k in range(n_photos)],
                    "attributes": {
                        "design": design,
                        "colour": colour,
                        "hue_shift": shift,
                        "subject": subject,
                        "source": drawing.source,
                    },
                }
            )
        if designs % 100 == 0:
            log.info("demo catalog: %d/%d products", len(products), n_products)
    return products, photos


def _design_id(source: str, taken: set[str]) -> str:
    """A readable id from the drawing's path (`food/fruit/apple_01.png` -> `food-fruit-apple-01`)."""
    slug = re.sub(r"[^a-z0-9]+", "-", Path(source).with_suffix("").as_posix().lower()).strip("-")[:120] or "drawing"
    design, n = slug, 2
    while design in taken:  # two names that differ only in punctuation
        design, n = f"{slug}-{n}", n + 1
    taken.add(design)
    return design


def _price(category: str, rng: np.random.Generator) -> str:
    """A shop-like price in the category's range: 3.49, 12.99."""
    low, high = PRICES.get(category, DEFAULT_PRICES)
    x = math.exp(rng.uniform(math.log(low), math.log(high)))
    cents = round(x * 10) * 10 - 1 if x < 10 else round(x) * 100 - 1
    return f"{max(cents, 9) / 100:.2f}"


# --- pixels -------------------------------------------------------------------------------------


def _hsv(rgba: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """HSV (0-255 each) of the opaque pixels, and whether each has a visible hue."""
    hsv = np.asarray(rgba.convert("RGB").convert("HSV"))
    opaque = np.asarray(rgba.getchannel("A")) > 128
    pixels = hsv[opaque]
    return pixels, (pixels[:, 1] > 64) & (pixels[:, 2] > 50)


def _colourful(rgba: Image.Image) -> bool:
    """Enough of the drawing has a visible hue for a hue rotation to make another colour."""
    pixels, hued = _hsv(rgba)
    return len(pixels) > 0 and hued.mean() >= MIN_SATURATED


def dominant_hue(rgba: Image.Image) -> str:
    """The name of the saturation-weighted circular mean hue of the drawing's coloured pixels."""
    pixels, hued = _hsv(rgba)
    if not hued.any():
        return "grey"
    angle = pixels[hued, 0].astype(np.float64) / 256 * 2 * np.pi
    weight = pixels[hued, 1].astype(np.float64)
    degrees = math.degrees(math.atan2((weight * np.sin(angle)).sum(), (weight * np.cos(angle)).sum())) % 360
    return next(name for upper, name in HUE_NAMES if degrees < upper)


def rotate_hue(rgba: Image.Image, degrees: int) -> Image.Image:
    """The drawing with every hue turned by `degrees`; saturation, value and alpha stay."""
    h, s, v = rgba.convert("RGB").convert("HSV").split()
    shift = round(degrees / 360 * 256)
    h = h.point(lambda x: (x + shift) % 256)
    out = Image.merge("HSV", (h, s, v)).convert("RGB").convert("RGBA")
    out.putalpha(rgba.getchannel("A"))
    return out


def product_shot(cutout: Image.Image, rng: np.random.Generator, *, first: bool) -> bytes:
    """A studio-like JPEG: the cut-out on a plain light background with a soft shadow; the first
    photo centred and upright, later ones at another scale, position and a small rotation."""
    grey = rng.uniform(236, 252)
    tint = rng.uniform(-4, 4)  # warm or cool paper
    background = tuple(int(round(c)) for c in (grey + tint, grey, grey - tint))
    if first:
        cut = fit(cutout, round(rng.uniform(0.72, 0.82) * SIDE))
    else:
        cut = fit(cutout, round(rng.uniform(0.5, 0.8) * SIDE))
        cut = cut.rotate(float(rng.uniform(-10, 10)), resample=Image.Resampling.BICUBIC, expand=True)
        cut = fit(cut, min(SIDE - 8, max(cut.size)), enlarge=False)
    free_x, free_y = SIDE - cut.width, SIDE - cut.height
    if first:
        x, y = free_x // 2, free_y // 2
    else:
        x, y = int(rng.integers(0, free_x + 1)), int(rng.integers(0, free_y + 1))
    layer = Image.new("RGBA", (SIDE, SIDE), (0, 0, 0, 0))
    layer.paste(cut, (x, y))
    dx, dy = round(rng.uniform(-0.015, 0.015) * SIDE), round(rng.uniform(0.01, 0.03) * SIDE)
    shade = layer.getchannel("A").transform(layer.size, Image.Transform.AFFINE, (1, 0, -dx, 0, 1, -dy))
    strength = float(rng.uniform(0.15, 0.3))
    shade = shade.filter(ImageFilter.GaussianBlur(0.025 * SIDE)).point(lambda a: round(a * strength))
    canvas = Image.new("RGB", (SIDE, SIDE), background)
    canvas.paste((0, 0, 0), (0, 0), shade)
    canvas.paste(layer, (0, 0), layer)
    buf = io.BytesIO()
    canvas.save(buf, "JPEG", quality=QUALITY)
    return buf.getvalue()


# --- files --------------------------------------------------------------------------------------


def _reuse(out_dir: Path, key: dict) -> DemoCatalog | None:
    """The earlier build in out_dir if it was made with the same key and its files are all there."""
    try:
        manifest = json.loads((out_dir / "manifest.json").read_text())
        if {k: manifest.get(k) for k in key} != key:
            return None
        lines = (out_dir / "catalog.jsonl").read_text().splitlines()
        products = [json.loads(line) for line in lines if line.strip()]
    except (OSError, ValueError):
        return None
    names = {n for p in products for n in p["image_urls"]}
    if len(products) != key["n_products"] or not all((out_dir / "images" / n).is_file() for n in names):
        return None
    log.info("demo catalog: reusing the build in %s", out_dir)
    counts = dict(sorted(Counter(p["category"] for p in products).items()))
    return DemoCatalog(out_dir, Path(key["source"]), products, counts, key["seed"], reused=True)


def _write(out_dir: Path, products: list[dict], photos: dict[str, list[bytes]], manifest: dict) -> None:
    """Write images/, catalog.jsonl and (last, so it marks a complete build) manifest.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "manifest.json").unlink(missing_ok=True)
    images = out_dir / "images"
    shutil.rmtree(images, ignore_errors=True)
    images.mkdir()
    (images / MARKER).write_text("written by vitrine.demo_catalog; replaced on the next build\n")
    for product_id, jpegs in photos.items():
        for k, jpeg in enumerate(jpegs):
            (images / f"{product_id}-{k}.jpg").write_bytes(jpeg)
    with (out_dir / "catalog.jsonl").open("w") as f:
        for p in products:
            f.write(json.dumps(p, sort_keys=True) + "\n")
    manifest["versions"] = {"numpy": np.__version__, "pillow": PIL.__version__}
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
