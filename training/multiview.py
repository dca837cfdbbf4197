"""A "same product, different photo" set built from clip-art cut-outs: one studio shot and K street shots each.

No real multi-photo product dataset installs offline, so this composes one from RGBA drawings in topic
folders (Debian's `openclipart-png`, or any folder of RGBA PNGs in category subfolders): it keeps the
drawings that are real cut-outs (the filter below), picks products balanced over categories, and has
`training.photoshoot` take a studio shot and street shots of each. The output is an ImageFolder
(`OUT/<product>/<k>.jpg`, one subfolder per product) plus `products.json` (product -> category,
source, title, per-photo box and visible share) and `dataset.json` (the arguments and filter counts).

Everything random comes from one `numpy.random.Generator` per product, seeded by (seed, product
index), so the same arguments on the same Pillow/numpy give byte-identical files.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import PIL
from PIL import Image, ImageFilter

from training.photoshoot import ALPHA_ON, Drawing, alpha_box, fit, load_cutout, street_shot, studio_shot
from vision.datasets import DatasetError, balanced_sample
from vision.image import pil_open

log = logging.getLogger(__name__)

OPENCLIPART_DIR = Path("/usr/share/openclipart/png")
INSTALL_HINT = (
    "install it with `sudo apt-get install openclipart-png` (Debian/Ubuntu); without root: "
    "`apt-get download openclipart-png && dpkg -x openclipart-png_*.deb DIR` and pass "
    "--source DIR/usr/share/openclipart/png (any folder of RGBA PNGs in category subfolders works)"
)
# openclipart topics that hold symbols, icons, flags, maps, diagrams, UI parts, card faces or
# textures rather than things a shop sells; their drawings are never products (nor backgrounds).
NON_PRODUCT_TOPICS = (
    "buttons",
    "computer/buttons",
    "computer/diagrams",
    "computer/icons",
    "geography",
    "logos",
    "people/smilies",
    "people/stickmen",
    "recreation/games/cards",
    "shapes",
    "signs_and_symbols",
    "special",
    "transportation/aiga-symbols",
    "transportation/roadsigns",
    "unsorted",
)

# The cut-out filter (measured on openclipart-png 0.18: 2,385 drawings outside the topics above ->
# 1,812 usable; see docs/training.md). Each threshold names the reason a drawing is skipped.
MAX_SOURCE_PIXELS = 16_000_000  # "too_large": read from the header, never decoded (a few are 170-620 Mpx)
MIN_TRANSPARENT = 0.10  # "no_transparent_area": at least 10 % of the canvas has alpha <= 16
MIN_OBJECT_SIDE = 120  # "tiny": the object's bounding box is at least 120 px on its long side
MIN_FILL = 0.08  # "near_empty": at least 8 % of the object's box is opaque
MIN_SOLIDITY = 0.45  # "line_art": at 128 px, 45 % of opaque pixels survive a 1-px erosion (thin strokes do not)
MIN_COLOUR_STD = 5.0  # "flat": RGB std over the opaque pixels (a one-colour silhouette is ~0)
MAX_ASPECT = 5.0  # "thin": long side / short side of the object's box
# "bw_twin": `x_bw.png` next to `x.png` (a greyscale copy of a drawing) is skipped without decoding.


@dataclass(frozen=True)
class MultiviewSummary:
    """What a build wrote and what the source held."""

    out_dir: str
    source_dir: str
    products: int
    photos: int
    size: int
    seed: int
    categories: dict[str, int]  # products per category
    scanned: int  # drawings looked at (outside the excluded topics)
    usable: int  # drawings that passed the cut-out filter
    rejected: dict[str, int]  # reason -> drawings skipped
    seconds: float = 0.0
    versions: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        return asdict(self)


def build_multiview_set(
    source_dir: Path,
    out_dir: Path,
    *,
    products: int = 600,
    photos: int = 3,
    size: int = 256,
    seed: int = 0,
    min_per_category: int = 8,
    exclude: tuple[str, ...] = NON_PRODUCT_TOPICS,
    overwrite: bool = False,
) -> MultiviewSummary:
    """Write `products` x `photos` JPEGs (photo 0 studio, the rest street) and products.json into out_dir."""
    started = time.perf_counter()
    source_dir, out_dir = Path(source_dir), Path(out_dir)
    if products < 1 or photos < 2 or size < 64 or min_per_category < 1:
        raise DatasetError("need products >= 1, photos >= 2 (a studio and a street shot), size >= 64 px")
    if not source_dir.is_dir():
        raise DatasetError(f"source of cut-outs {source_dir} not found: {INSTALL_HINT}")
    _check_out_dir(out_dir, overwrite)
    drawings, rejected, scanned = scan_drawings(source_dir, exclude)
    log.info("%d of %d drawings are usable cut-outs (%.1f s)", len(drawings), scanned, time.perf_counter() - started)
    per_category = Counter(d.category for d in drawings)
    kept = sorted(c for c, n in per_category.items() if n >= min_per_category)
    pool = [d for d in drawings if d.category in kept]
    if len(kept) < 2 or len(pool) < products:
        raise DatasetError(
            f"{source_dir} has {len(drawings)} usable cut-outs of {scanned} drawings; {len(pool)} of them in "
            f"{len(kept)} categories with >= {min_per_category} each; need {products} products in >= 2 "
            f"categories (skipped: {_reasons(rejected)})"
        )
    picked = [pool[i] for i in balanced_sample([d.category for d in pool], products, seed)]
    chosen = set(picked)
    # Scenery comes from drawings that are not products when there are enough, so a product's
    # photos do not show another product of the set; a tiny source falls back to the products.
    distractors = [d for d in drawings if d not in chosen] or picked
    summary = MultiviewSummary(
        out_dir=str(out_dir),
        source_dir=str(source_dir),
        products=products,
        photos=photos,
        size=size,
        seed=seed,
        categories=dict(sorted(Counter(d.category for d in picked).items())),
        scanned=scanned,
        usable=len(drawings),
        rejected=dict(sorted(rejected.items())),
        versions={"numpy": np.__version__, "pillow": PIL.__version__},
    )
    # dataset.json carries no timing, so that two builds with the same arguments are byte-identical.
    record = {k: v for k, v in summary.to_dict().items() if k not in ("seconds", "out_dir")}
    record["min_per_category"] = min_per_category
    partial = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        meta = _write_products(partial, picked, distractors, photos=photos, size=size, seed=seed)
        (partial / "products.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        (partial / "dataset.json").write_text(json.dumps(record, indent=1) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        partial.rename(out_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)  # nothing half-built is left behind
        raise
    seconds = round(time.perf_counter() - started, 1)
    log.info("wrote %d products x %d photos to %s in %.1f s", products, photos, out_dir, seconds)
    return replace(summary, seconds=seconds)


def _write_products(
    folder: Path, picked: list[Drawing], distractors: list[Drawing], *, photos: int, size: int, seed: int
) -> dict:
    """Render and write every product's photos into folder/<product>/<k>.jpg; return products.json's content."""
    width = max(4, len(str(len(picked) - 1)))
    meta = {}
    for i, drawing in enumerate(picked):
        product_id = f"p{i:0{width}d}"
        rng = np.random.default_rng([seed, i])
        others = [d for d in distractors if d.category != drawing.category] or [
            d for d in picked if d.category != drawing.category
        ]
        shots = render_product(drawing.path, others, photos=photos, size=size, rng=rng)
        (folder / product_id).mkdir()
        for k, (jpeg, _) in enumerate(shots):
            (folder / product_id / f"{k}.jpg").write_bytes(jpeg)
        meta[product_id] = {
            "category": drawing.category,
            "source": drawing.source,
            "title": title_of(drawing.path),
            "photos": [shot for _, shot in shots],
        }
        if (i + 1) % 100 == 0:
            log.info("rendered %d/%d products", i + 1, len(picked))
    return meta


def scan_drawings(
    source_dir: Path, exclude: tuple[str, ...] = (), include: tuple[str, ...] | None = None
) -> tuple[list[Drawing], Counter, int]:
    """The usable cut-outs under source_dir (category = subfolder path), the skip reasons, the count scanned.

    `exclude` and `include` name topics (subfolder paths); each covers its subfolders too. With
    `include`, only drawings in those topics are looked at (and decoded)."""
    drawings, rejected, scanned = [], Counter(), 0
    for path in sorted(source_dir.rglob("*")):
        if path.suffix.lower() != ".png" or not path.is_file() or path.parent == source_dir:
            continue  # a drawing directly in the root has no topic
        category = path.parent.relative_to(source_dir).as_posix()
        if _under(category, exclude) or (include is not None and not _under(category, include)):
            continue
        scanned += 1
        reason = "bw_twin" if _is_bw_twin(path) else cutout_problem(path)
        if reason:
            rejected[reason] += 1
        else:
            drawings.append(Drawing(path, path.relative_to(source_dir).as_posix(), category))
    return drawings, rejected, scanned


def _under(topic: str, topics: tuple[str, ...]) -> bool:
    """Whether topic is one of topics or a subfolder of one."""
    return any(topic == t or topic.startswith(t + "/") for t in topics)


def cutout_problem(path: Path) -> str | None:
    """Why this PNG is not a usable product cut-out (a reason word), or None when it is."""
    try:
        with warnings.catch_warnings():
            # The size is checked here against a lower limit, before anything is decoded.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with pil_open(path) as im:  # not ultralytics' replacement (vision/image.py)
                if im.width * im.height > MAX_SOURCE_PIXELS:
                    return "too_large"
                if im.mode not in ("RGBA", "LA", "PA") and "transparency" not in im.info:
                    return "no_alpha"
                rgba = im.convert("RGBA")
    except Image.DecompressionBombError:
        return "too_large"
    except (OSError, SyntaxError, ValueError):
        return "unreadable"
    alpha = np.asarray(rgba.getchannel("A"))
    if (alpha <= ALPHA_ON).mean() < MIN_TRANSPARENT:
        return "no_transparent_area"
    box = alpha_box(rgba)
    if box is None:
        return "empty"
    obj = rgba.crop(box)
    if max(obj.size) < MIN_OBJECT_SIDE:
        return "tiny"
    if max(obj.size) / min(obj.size) > MAX_ASPECT:
        return "thin"
    obj = fit(obj, 128)
    a = obj.getchannel("A")
    opaque = np.asarray(a) > 128
    if opaque.mean() < MIN_FILL:
        return "near_empty"
    eroded = np.asarray(a.filter(ImageFilter.MinFilter(3))) > 128
    if eroded.sum() < MIN_SOLIDITY * opaque.sum():
        return "line_art"
    if np.asarray(obj.convert("RGB"), dtype=np.float32)[opaque].std(axis=0).mean() < MIN_COLOUR_STD:
        return "flat"
    return None


def _is_bw_twin(path: Path) -> bool:
    """`x_bw.png` beside `x.png`: a greyscale copy is the same product in another colourway, and as a
    second product it would turn a correct match into a miss."""
    stem = path.stem
    return stem.lower().endswith(("_bw", "-bw")) and path.with_name(stem[:-3] + path.suffix).is_file()


def title_of(path: Path) -> str:
    """A readable title from a drawing's file name (`red_apple_01.png` -> `Red apple`)."""
    words = re.sub(r"[_\-.]+", " ", path.stem).split()
    while len(words) > 1 and words[-1].isdigit():
        words.pop()
    text = " ".join(words)
    return text[:1].upper() + text[1:]


def render_product(
    path: Path, others: list[Drawing], *, photos: int, size: int, rng: np.random.Generator
) -> list[tuple[bytes, dict]]:
    """JPEG bytes and a description of each photo of one product: photo 0 studio, the rest street."""
    product = load_cutout(path, 2 * size)
    shots = [studio_shot(product, size, rng)]
    for _ in range(photos - 1):
        background = others[int(rng.integers(len(others)))]
        occluder = others[int(rng.integers(len(others)))]
        shots.append(street_shot(product, size, rng, backdrop=background, occluder=occluder))
    return shots


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse to replace anything but an earlier build, and that only when asked to."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise DatasetError(f"{out_dir} exists and is not a directory")
    if any(out_dir.iterdir()):
        if not (out_dir / "products.json").is_file():
            raise DatasetError(f"{out_dir} is not empty and holds no earlier build (no products.json): pick another")
        if not overwrite:
            raise DatasetError(f"{out_dir} holds an earlier build: pass --overwrite to replace it")


def _reasons(rejected: Counter) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in rejected.most_common()) or "none"
