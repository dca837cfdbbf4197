"""The catalog teacher's scenes: product cut-outs composited onto varied backgrounds, with exact boxes.

A catalog photo is one product on a plain background; cut out, it can be pasted anywhere, so a scene
of several products comes with boxes for free. Each product is scaled (long side 0.2-0.6 of the
frame), flipped, turned (+-25 degrees), relit a little and placed with limited overlap; some are
partly hidden by a later one or cut by the frame. A box is the visible extent of the product's alpha
in the finished scene (hidden and off-frame parts excluded). Products of categories that are not
classes are pasted as distractors and never boxed.

`build_scene_set` splits by product: train and val scenes show only training products, test scenes
only held-out ones, so the test measures products the student never saw. Every random choice comes
from numpy Generators seeded from `seed`: the same inputs give the same images and labels.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from training import photoshoot as shoot  # its pixel helpers, shared rather than copied
from training.labelsets import SPLITS, Box, LabelledImage, LabelSet, write_label_set
from training.photoshoot import alpha_box, fit
from vision.image import pil_open

log = logging.getLogger(__name__)

MIN_PRODUCTS = 3  # per class: at least two to train on and one held out for the test scenes
MIN_VISIBLE = 0.3  # a box whose visible alpha is below this share of its pasted alpha is dropped
DEFAULT_SCENES = {"train": 600, "val": 100, "test": 200}


class SceneSetError(ValueError):
    """A scene set that cannot be built as asked; the message says why."""


@dataclass(frozen=True)
class CatalogCutout:
    """One product photo cut out: RGBA, cropped to the object."""

    product_id: str
    category: str
    rgba: Image.Image


@dataclass(frozen=True)
class _Recipe:
    """How items are placed: sizes, turns, how much may be hidden or cut by the frame."""

    scale: tuple[float, float] = (0.2, 0.6)  # long side / frame side
    max_angle: float = 25.0
    cut_chance: float = 0.2  # share of items placed partly past the frame edge
    min_in_frame: float = 0.6  # an item keeps at least this share of its alpha inside the frame
    keep: float = 0.5  # an earlier item keeps at least this share visible when a later one lands
    tries: int = 12  # positions tried before an item is left out of the scene
    shadow_chance: float = 0.5


SCENE = _Recipe()
LOOK = _Recipe(scale=(0.25, 0.42), max_angle=15.0, cut_chance=0.0, min_in_frame=0.98, keep=0.9, tries=40)


def cutouts_from_photos(
    photos: Iterable[tuple[str, str, Image.Image]], cut: Callable | None = None
) -> tuple[list[CatalogCutout], Counter]:
    """Cut out each (product id, category, photo); rejected photos are counted by reason.

    `cut(image)` returns an RGBA image or an object with `.rgba` (vision.cutout.Cutout) and raises
    an exception with a `.reason` (vision.cutout.NoCutout) when the photo cannot be cut; the default
    is vision.cutout.cut_out (alpha channel, else plain-background subtraction).
    """
    if cut is None:
        from vision.cutout import cut_out as cut  # lazy: only this function needs it

    cutouts: list[CatalogCutout] = []
    rejected: Counter = Counter()
    for product_id, category, photo in photos:
        try:
            result = cut(photo)
        except Exception as exc:  # only the cutter's own refusals (they carry a reason); bugs propagate
            if not hasattr(exc, "reason"):
                raise
            rejected[str(exc.reason)] += 1
            continue
        rgba = getattr(result, "rgba", result).convert("RGBA")
        box = alpha_box(rgba)
        if box is None:
            rejected["empty"] += 1
            continue
        cutouts.append(CatalogCutout(product_id, category, rgba.crop(box)))
    return cutouts, rejected


def split_products(
    cutouts: Sequence[CatalogCutout], held_out: float, seed: int
) -> tuple[list[CatalogCutout], list[CatalogCutout]]:
    """(train, test) by product, stratified per category; a category of >= 2 products has some on each side."""
    if not 0 < held_out < 1:
        raise SceneSetError(f"held_out must be between 0 and 1 (exclusive), got {held_out}")
    by_category: dict[str, set[str]] = defaultdict(set)
    for c in cutouts:
        by_category[c.category].add(c.product_id)
    test_ids: set[str] = set()
    for category, ids in by_category.items():
        ordered = sorted(ids)
        n = len(ordered)
        n_test = min(max(round(held_out * n), 1), n - 1) if n >= 2 else 0
        # One generator per category, so adding a category does not move the others' products.
        rng = np.random.default_rng([seed, zlib.crc32(category.encode())])
        test_ids.update(ordered[i] for i in rng.permutation(n)[:n_test])
    train = [c for c in cutouts if c.product_id not in test_ids]
    test = [c for c in cutouts if c.product_id in test_ids]
    return train, test


def compose_scene(
    items: Sequence[tuple[Image.Image, str | None]],
    size: int,
    rng: np.random.Generator,
    *,
    background: Image.Image | tuple[int, int, int] | None = None,
) -> tuple[Image.Image, list[Box]]:
    """A size x size RGB scene of the RGBA items (in paste order) and the boxes of those with a label.

    `background`: None for a random one (flat, gradient, texture or room), an RGB colour for a flat
    one, or an image (a cut-out or a photo) shown enlarged and out of focus behind the items.
    Items with label None are distractors: pasted, never boxed. An item that finds no place where it
    would not hide too much of an earlier one is left out.
    """
    image, placed = _compose(items, size, rng, background, SCENE)
    return image, [box for _, box in placed if box.label is not None]


def _compose(
    items: Sequence[tuple[Image.Image, str | None]],
    size: int,
    rng: np.random.Generator,
    background: Image.Image | tuple[int, int, int] | None,
    recipe: _Recipe,
) -> tuple[Image.Image, list[tuple[int, Box]]]:
    """The scene and (item index, box) for every pasted item whose visible share is >= MIN_VISIBLE."""
    canvas = _background(size, rng, background)
    masks: list[tuple[int, np.ndarray, float, str | None]] = []  # index, visible alpha 0-1, pasted mass, label
    for index, (rgba, label) in enumerate(items):
        cut = _prepare(rgba, size, rng, recipe)
        layer = _placement(cut, size, rng, recipe, masks)
        if layer is None:
            log.debug("item %d left out: no position keeps the others visible", index)
            continue
        alpha = np.asarray(layer.getchannel("A"), np.float32) / 255
        for _, visible, _, _ in masks:
            visible *= 1 - alpha
        masks.append((index, alpha, float(np.asarray(cut.getchannel("A"), np.float32).sum() / 255), label))
        if rng.random() < recipe.shadow_chance:
            canvas = shoot._shadow(
                canvas,
                layer,
                dx=rng.uniform(-0.02, 0.02) * size,
                dy=rng.uniform(0.005, 0.03) * size,
                blur=0.02 * size,
                strength=rng.uniform(0.1, 0.3),
            )
        canvas = shoot._over(canvas, layer)
    placed = []
    for index, visible, mass, label in masks:
        ys, xs = np.nonzero(visible > 0.5)
        if len(xs) == 0 or visible.sum() < MIN_VISIBLE * mass:
            continue
        placed.append((index, Box(label, (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)))))
    return _degrade(canvas, rng), placed


def _prepare(rgba: Image.Image, size: int, rng: np.random.Generator, recipe: _Recipe) -> Image.Image:
    """Scaled, maybe mirrored, turned and slightly relit; cropped to its alpha."""
    cut = fit(rgba.convert("RGBA"), max(4, round(rng.uniform(*recipe.scale) * size)))
    if rng.random() < 0.5:
        cut = ImageOps.mirror(cut)
    angle = float(rng.uniform(-recipe.max_angle, recipe.max_angle))
    # Premultiplied while resampling, so transparent black does not leak a dark fringe into the edge.
    cut = cut.convert("RGBa").rotate(angle, resample=Image.Resampling.BICUBIC, expand=True).convert("RGBA")
    cut = cut.crop(alpha_box(cut) or (0, 0, cut.width, cut.height))
    arr = np.asarray(cut, np.float32).copy()
    warmth = rng.uniform(-0.05, 0.05)
    rgb = arr[..., :3] * np.array([1 + warmth, 1, 1 - warmth], np.float32)
    weight = arr[..., 3:] / 255
    mean = (rgb * weight).sum() / max(3 * weight.sum(), 1.0)  # of the object, not its transparent corners
    arr[..., :3] = ((rgb - mean) * rng.uniform(0.9, 1.1) + mean) * rng.uniform(0.88, 1.12)
    return Image.fromarray(arr.round().clip(0, 255).astype(np.uint8), "RGBA")


def _placement(
    cut: Image.Image, size: int, rng: np.random.Generator, recipe: _Recipe, masks: list
) -> Image.Image | None:
    """A frame-sized layer with the cut placed where it hides at most (1 - keep) of each earlier item."""
    mass = np.asarray(cut.getchannel("A"), np.float32).sum() / 255
    for _ in range(recipe.tries):
        cut_off = float(rng.uniform(0.1, 0.4)) if rng.random() < recipe.cut_chance else 0.0
        layer = shoot._place(cut, size, *shoot._position(cut, size, rng, cut_off))
        alpha = np.asarray(layer.getchannel("A"), np.float32) / 255
        if alpha.sum() < recipe.min_in_frame * mass:
            continue
        if all((visible * (1 - alpha)).sum() >= recipe.keep * whole for _, visible, whole, _ in masks):
            return layer
    return None


def _background(size: int, rng: np.random.Generator, background) -> np.ndarray:
    """A float RGB canvas: flat (often near white, like a studio), gradient, texture or room, or a backdrop."""
    if isinstance(background, tuple):
        return np.broadcast_to(np.array(background[:3], np.float32), (size, size, 3)).copy()
    kind = rng.choice(["flat", "gradient", "texture", "room"], p=[0.3, 0.25, 0.2, 0.25])
    if kind == "flat":
        light = rng.random() < 0.5
        colour = np.full(3, rng.uniform(225, 255), np.float32) if light else shoot._hsv(*rng.uniform(0, 1, 3))
        canvas = (
            np.broadcast_to(colour, (size, size, 3))
            + (shoot._noise(rng, size // 2, size) * rng.uniform(0, 4))[..., None]
        )
    elif kind == "gradient":
        a, b = shoot._hsv(*rng.uniform(0, 1, 3)), shoot._hsv(*rng.uniform(0, 1, 3))
        theta = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
        t = (np.cos(theta) * xx + np.sin(theta) * yy + 0.71) / 1.42
        canvas = a * (1 - t[..., None]) + b * t[..., None]
    elif kind == "texture":
        base = shoot._hsv(rng.random(), rng.uniform(0.1, 0.7), rng.uniform(0.3, 0.95))
        cells = int(rng.integers(4, max(5, size // 8)))
        per_channel = np.stack([shoot._noise(rng, cells, size) for _ in range(3)], axis=-1)
        canvas = base + per_channel * rng.uniform(15, 50)
    else:
        canvas = shoot._scene(size, rng)
    if isinstance(background, Image.Image):
        source = background.convert("RGBA")
        if background.mode != "RGBA":  # a photo: a random region of it, not always the product in the middle
            side = round(min(source.size) * rng.uniform(0.4, 1.0))
            x, y = (int(rng.integers(0, s - side + 1)) for s in source.size)
            source = source.crop((x, y, x + side, y + side))
        canvas = shoot._backdrop(np.asarray(canvas, np.float32), source, size, rng)
    return np.asarray(canvas, np.float32)


def _degrade(canvas: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Slight camera trouble: other light now and then, a little blur, sensor noise, JPEG."""
    size = canvas.shape[0]
    if rng.random() < 0.5:
        canvas = shoot._relight(canvas, rng)
    if rng.random() < 0.4:
        canvas = np.asarray(shoot._image(canvas).filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0) * size / 256)))
    canvas = canvas + rng.normal(0, rng.uniform(0, 3), canvas.shape).astype(np.float32)
    with pil_open(io.BytesIO(shoot._jpeg(canvas, int(rng.integers(60, 96))))) as im:
        return im.convert("RGB")


def build_scene_set(
    cutouts: Sequence[CatalogCutout],
    classes: Sequence[str],
    out_dir: Path,
    *,
    scenes: Mapping[str, int] | None = None,
    size: int = 320,
    items: tuple[int, int] = (1, 4),
    distractor_share: float = 0.3,
    held_out: float = 0.3,
    seed: int = 0,
    rejected: Mapping[str, int] | None = None,
    card_extra: Mapping | None = None,
) -> Path:
    """Write one label set of composite scenes (names = classes); train/val from training products, test held out.

    `scenes` defaults to {"train": 600, "val": 100, "test": 200}; `items` is the (min, max) number
    of products per scene, each a distractor (a category not in `classes`) with `distractor_share`;
    `rejected` (photos that did not cut, by reason) goes on the card.
    """
    started = time.perf_counter()
    scenes = dict(DEFAULT_SCENES if scenes is None else scenes)
    _check(cutouts, classes, Path(out_dir), scenes, size, items, distractor_share)
    train, test = split_products(cutouts, held_out, seed)
    sides = {"train": train, "val": train, "test": test}
    images: list[LabelledImage] = []
    boxes: dict[str, Counter] = {}
    for split, n in scenes.items():
        pool = _Pool(sides[split], classes)
        rng = np.random.default_rng([seed, SPLITS.index(split)])  # per split: changing one count moves no other
        tally: Counter = Counter()
        for i in range(n):
            chosen = pool.draw(rng, int(rng.integers(items[0], items[1] + 1)), distractor_share)
            backdrop = pool.backdrop(rng) if rng.random() < 0.3 else None
            image, found = compose_scene(chosen, size, rng, background=backdrop)
            tally.update(b.label for b in found)
            images.append(LabelledImage(f"{split}-{i:05d}", image, found, split))
        boxes[split] = tally
    card = {
        "teacher": "catalog",
        "classes": list(classes),
        "products": {side: _products(sides[side], classes) for side in ("train", "test")},
        "distractors": {side: _products(sides[side], _others(cutouts, classes)) for side in ("train", "test")},
        "boxes_per_class": {split: {c: boxes[split][c] for c in classes} for split in boxes},
        "seed": seed,
        "size": size,
        "parameters": {
            "scenes": scenes,
            "items": list(items),
            "distractor_share": distractor_share,
            "held_out": held_out,
            "scale": list(SCENE.scale),
            "max_angle": SCENE.max_angle,
            "min_visible": MIN_VISIBLE,
        },
        "rejected": dict(sorted((rejected or {}).items())),
        "cutouts": len(cutouts),
        "versions": {"numpy": np.__version__, "pillow": Image.__version__},
        **dict(card_extra or {}),
    }
    written = write_label_set(LabelSet(list(classes), images, card), Path(out_dir))
    log.info("%d scenes written to %s in %.1f s", len(images), written, time.perf_counter() - started)
    return written


def _check(cutouts, classes, out_dir: Path, scenes: dict, size: int, items: tuple[int, int], share: float) -> None:
    """Refuse, before any work, what cannot give a useful set."""
    if out_dir.exists():
        raise SceneSetError(f"{out_dir} already exists; a scene set is never overwritten")
    if not classes or len(set(classes)) != len(classes):
        raise SceneSetError(f"classes must be non-empty and distinct, got {list(classes)}")
    unknown = set(scenes) - set(SPLITS)
    if unknown or any(not isinstance(n, int) or n < 0 for n in scenes.values()):
        raise SceneSetError(f"scenes must map splits {SPLITS} to counts >= 0, got {scenes}")
    if size < 32:
        raise SceneSetError(f"size must be at least 32 px, got {size}")
    if not 1 <= items[0] <= items[1]:
        raise SceneSetError(f"items must be (min, max) with 1 <= min <= max, got {items}")
    if not 0 <= share < 1:
        raise SceneSetError(f"distractor_share must be in [0, 1), got {share}")
    products: dict[str, set[str]] = defaultdict(set)
    for c in cutouts:
        products[c.category].add(c.product_id)
    short = [f"{c!r} has {len(products[c])}" for c in classes if len(products[c]) < MIN_PRODUCTS]
    if short:
        raise SceneSetError(
            f"too few products with a usable cut-out: {', '.join(short)}; each class needs at least "
            f"{MIN_PRODUCTS} (some to train on, one held out for the test scenes)"
        )


class _Pool:
    """The cut-outs of one side, grouped by class and product, and the distractors."""

    def __init__(self, cutouts: Sequence[CatalogCutout], classes: Sequence[str]):
        self.classes = list(classes)
        self.by_class: dict[str, dict[str, list[Image.Image]]] = {c: {} for c in classes}
        self.distractors: dict[str, list[Image.Image]] = {}
        for c in cutouts:
            target = self.by_class.get(c.category, self.distractors)
            target.setdefault(c.product_id, []).append(c.rgba)
        self.distractor_ids = sorted(self.distractors)

    def draw(self, rng: np.random.Generator, n: int, share: float) -> list[tuple[Image.Image, str | None]]:
        """n items: the first always of a class, distinct classes while they last, some distractors."""
        order = [self.classes[i] for i in rng.permutation(len(self.classes))]
        chosen: list[tuple[Image.Image, str | None]] = []
        for k in range(n):
            if k > 0 and self.distractor_ids and rng.random() < share:
                chosen.append((self._photo(self.distractors, self.distractor_ids, rng), None))
                continue
            label = order[len([1 for _, lab in chosen if lab is not None]) % len(order)]
            chosen.append((self._photo(self.by_class[label], sorted(self.by_class[label]), rng), label))
        return chosen

    def backdrop(self, rng: np.random.Generator) -> Image.Image | None:
        """A distractor cut-out for the blurred backdrop (never a class product: it would go unlabelled)."""
        return self._photo(self.distractors, self.distractor_ids, rng) if self.distractor_ids else None

    @staticmethod
    def _photo(products: dict[str, list[Image.Image]], ids: list[str], rng: np.random.Generator) -> Image.Image:
        photos = products[ids[int(rng.integers(len(ids)))]]
        return photos[int(rng.integers(len(photos)))]


def _products(cutouts: Sequence[CatalogCutout], categories: Iterable[str]) -> dict[str, dict]:
    """Per category: how many products and the sha256 of their sorted ids (to compare splits later)."""
    out = {}
    for category in categories:
        ids = sorted({c.product_id for c in cutouts if c.category == category})
        out[category] = {"n": len(ids), "ids_sha256": hashlib.sha256(json.dumps(ids).encode()).hexdigest()}
    return out


def _others(cutouts: Sequence[CatalogCutout], classes: Sequence[str]) -> list[str]:
    return sorted({c.category for c in cutouts} - set(classes))


def shop_the_look_scenes(
    cutouts: Sequence[CatalogCutout], n: int, rng: np.random.Generator, size: int = 640, k: int = 3
) -> list[tuple[Image.Image, list[tuple[str, Box]]]]:
    """n scenes of k different products (distinct categories when possible), little occlusion, and where each is.

    A Box's label is the product's category; a product that found no place is not listed.
    """
    by_category: dict[str, dict[str, list[Image.Image]]] = defaultdict(dict)
    for c in cutouts:
        by_category[c.category].setdefault(c.product_id, []).append(c.rgba)
    categories = sorted(by_category)
    if sum(len(p) for p in by_category.values()) < k:
        raise SceneSetError(f"shop-the-look scenes need at least {k} products, got {len(cutouts)} cut-outs")
    out = []
    for _ in range(n):
        picked: list[tuple[str, str]] = []  # (category, product id)
        while len(picked) < k:
            used = {cat for cat, _ in picked}
            fresh = [c for c in categories if c not in used] or categories
            category = fresh[int(rng.integers(len(fresh)))]
            ids = sorted(set(by_category[category]) - {pid for _, pid in picked})
            if ids:
                picked.append((category, ids[int(rng.integers(len(ids)))]))
        items = []
        for category, pid in picked:
            photos = by_category[category][pid]
            items.append((photos[int(rng.integers(len(photos)))], category))
        image, placed = _compose(items, size, rng, None, LOOK)
        out.append((image, [(picked[i][1], box) for i, box in placed]))
    return out


def demo_catalog_photos(
    catalog_dir: Path, *, all_photos: bool = False, by_design: bool = False
) -> list[tuple[str, str, Image.Image]]:
    """(product id, category, RGB photo) from a built demo catalog's catalog.jsonl and images/ (first photo each).

    With `by_design`, the id is the product's design (`attributes.design`, else its id): the demo's
    colour variants of one drawing are then one product with several photos, so a split by product
    puts them on the same side (a held-out test must not hold a recoloured training product).
    """
    catalog_dir = Path(catalog_dir)
    listing = catalog_dir / "catalog.jsonl"
    if not listing.is_file():
        raise SceneSetError(f"{catalog_dir} is not a demo catalog (no catalog.jsonl); build one with `vitrine demo`")
    photos: list[tuple[str, str, Image.Image]] = []
    skipped: Counter = Counter()
    for n, line in enumerate(listing.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            pid, category, names = str(row["id"]), str(row["category"]), list(row.get("image_urls") or [])
            if by_design:
                pid = str((row.get("attributes") or {}).get("design") or pid)
        except (ValueError, KeyError, TypeError):
            skipped["bad_line"] += 1
            log.warning("catalog.jsonl line %d is not a product (needs id, category, image_urls)", n)
            continue
        for name in names if all_photos else names[:1]:
            path = catalog_dir / "images" / Path(str(name)).name  # a bare file name: never outside images/
            try:
                with pil_open(path) as im:
                    photos.append((pid, category, im.convert("RGB")))
            except OSError as exc:
                skipped["unreadable_image"] += 1
                log.warning("skipping %s: %s", path, exc)
    if skipped:
        log.warning("demo catalog %s: skipped %s", catalog_dir, dict(skipped))
    return photos
