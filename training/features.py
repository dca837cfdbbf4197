"""Backbone features: the pretrained embedder's unit vectors (what the worker stores), and of augmented views.

A head trains on these, so the backbone runs once per image (and once per augmented view), never per
epoch. Views come from lightly's SimCLR transform: random crops, flips, colour jitter, greyscale and
blur; the `design` method turns colour jitter and greyscale up so that colour carries no signal.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from vision.embedder import Embedder, l2_normalize

log = logging.getLogger(__name__)

# Augmentation strengths: a same-product "other photo" (mild) and the colour-removing design views.
PRODUCT_VIEWS = {"cj_prob": 0.5, "cj_strength": 0.5, "random_gray_scale": 0.1, "gaussian_blur": 0.2, "min_scale": 0.5}
DESIGN_VIEWS = {"cj_prob": 0.8, "cj_strength": 1.0, "random_gray_scale": 0.5, "gaussian_blur": 0.5, "min_scale": 0.3}


def backbone_features(
    embedder: Embedder, images: Sequence[Image.Image], *, cache_dir: Path | None = None, progress=None
) -> np.ndarray:
    """(n, dim) unit vectors of `images` from the pretrained embedder, cached on disk by content when asked."""
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"{_images_digest(embedder.model_key, images)}.npy"
        if path.is_file():
            log.info("backbone features from cache %s", path)
            return np.load(path)
    out = _embed_in_chunks(embedder, images, progress)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, out)
        tmp.replace(path)
    return out


def view_features(
    embedder: Embedder, images: Sequence[Image.Image], *, views: int, strength: dict, seed: int, progress=None
) -> np.ndarray:
    """(n, views, dim) backbone unit vectors of `views` random augmentations of each image (seeded)."""
    import torch
    from lightly.transforms import SimCLRTransform

    transform = SimCLRTransform(input_size=embedder.input_size, **strength)
    single = transform.transforms[0] if hasattr(transform, "transforms") else transform
    torch.manual_seed(seed)
    out = np.empty((len(images), views, embedder.dim), dtype=np.float32)
    for v in range(views):
        batch: list[np.ndarray] = []
        rows = []
        for i, image in enumerate(images):
            batch.append(single(image.convert("RGB")).numpy())
            rows.append(i)
            if len(batch) == embedder.batch_size or i == len(images) - 1:
                out[rows, v] = l2_normalize(embedder.forward_batch(np.stack(batch)))
                batch, rows = [], []
                if progress is not None:
                    progress(len(images) * v + i + 1, len(images) * views, float("nan"))
    return out


def _embed_in_chunks(embedder: Embedder, images: Sequence[Image.Image], progress, chunk: int = 512) -> np.ndarray:
    parts = []
    for start in range(0, len(images), chunk):
        parts.append(embedder.embed(images[start : start + chunk]))
        if progress is not None:
            progress(min(start + chunk, len(images)), len(images), float("nan"))
    return np.concatenate(parts) if parts else np.zeros((0, embedder.dim), dtype=np.float32)


def _images_digest(model_key: str, images: Sequence[Image.Image]) -> str:
    h = hashlib.sha256(model_key.encode())
    for image in images:
        h.update(f"{image.mode}{image.size}".encode())
        h.update(image.tobytes())
    return h.hexdigest()[:24]
