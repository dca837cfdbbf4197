"""Held-out comparison: the trained model beside the pretrained backbone and raw pixels, on the same images.

Relevance is "same product" when products have several photos (the "same product, different photo"
task), else "same category"; with several photos per product the category figures are reported too.
`colour_entropy` measures how colour-agnostic neighbour lists are (the design method's goal).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from vision.eval import nearest, retrieval_scores

COLOUR_BINS = 12  # hue sectors; plus black, grey and white for achromatic images
COLOUR_K = 10


def compare(
    candidates: dict[str, tuple[np.ndarray, str]],
    products: np.ndarray,
    categories: np.ndarray,
    *,
    images: Sequence[Image.Image] | None = None,
) -> dict:
    """Scores per candidate (name -> (vectors, metric)) on one held-out set; adds colour entropy when images given."""
    multi_photo = len(set(products.tolist())) < len(products)
    relevance = "product" if multi_photo else "category"
    colours = dominant_colours(images) if images is not None else None
    out = {"relevance": relevance, "queries": None, "models": {}}
    for name, (vectors, metric) in candidates.items():
        primary = retrieval_scores(vectors, products if multi_photo else categories, metric=metric)["overall"]
        row = {k: round(v, 4) for k, v in primary.items() if k != "queries"}
        out["queries"] = primary["queries"]
        if multi_photo:
            by_category = retrieval_scores(vectors, categories, metric=metric)["overall"]
            row["category mAP@5"] = round(by_category["mAP@5"], 4)
        if colours is not None:
            row["colour entropy"] = round(colour_entropy(vectors, colours, metric=metric), 3)
        out["models"][name] = row
    return out


def dominant_colours(images: Sequence[Image.Image]) -> np.ndarray:
    """Each image's dominant colour as a bin: 0-11 hue sectors, 12 black, 13 grey, 14 white.

    On a 32x32 thumbnail, ignoring near-white background pixels; an image with under 20 % saturated
    pixels is achromatic and binned by its median brightness."""
    out = np.empty(len(images), dtype=np.int64)
    for i, image in enumerate(images):
        hsv = np.asarray(image.convert("RGB").resize((32, 32)).convert("HSV"), dtype=np.float32) / 255.0
        h, s, v = hsv[..., 0].ravel(), hsv[..., 1].ravel(), hsv[..., 2].ravel()
        foreground = ~((s < 0.1) & (v > 0.92))
        h, s, v = (h[foreground], s[foreground], v[foreground]) if foreground.any() else (h, s, v)
        chromatic = (s > 0.25) & (v > 0.2)
        if chromatic.mean() >= 0.2:
            out[i] = int(np.bincount((h[chromatic] * COLOUR_BINS).astype(int) % COLOUR_BINS).argmax())
        else:
            brightness = float(np.median(v))
            out[i] = COLOUR_BINS + (0 if brightness < 0.25 else 1 if brightness < 0.75 else 2)
    return out


def colour_entropy(vectors: np.ndarray, colours: np.ndarray, *, k: int = COLOUR_K, metric: str = "cosine") -> float:
    """Mean Shannon entropy (bits) of the dominant colours among each image's k nearest neighbours.

    0 = every neighbour list is one colour (colour drives similarity); log2(15) ~ 3.9 is the most mixed."""
    ranked = nearest(vectors, k, metric=metric)
    entropies = []
    for row in colours[ranked]:
        p = np.bincount(row, minlength=COLOUR_BINS + 3) / len(row)
        p = p[p > 0]
        entropies.append(float(-(p * np.log2(p)).sum()))
    return float(np.mean(entropies))


def index_megabytes(dim: int, items: int = 10_000, *, bits: int | None = None) -> float:
    """Vector storage for `items` items: halfvec (2 bytes a dimension), or packed binary codes."""
    per_item = bits / 8 if bits else 2 * dim
    return round(per_item * items / 1e6, 3)
