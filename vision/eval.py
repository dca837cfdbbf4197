"""Retrieval quality: leave-one-out mAP@k and recall@k where relevance is "same label"; a raw-pixel baseline."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

MAP_KS = (5, 10)
RECALL_KS = (1, 5, 10)
RAW_SIDE = 32  # the raw-pixel baseline compares 32x32 greyscale thumbnails


def retrieval_scores(
    vectors: np.ndarray,
    labels: Sequence,
    *,
    metric: str = "cosine",
    map_ks: Sequence[int] = MAP_KS,
    recall_ks: Sequence[int] = RECALL_KS,
) -> dict:
    """Every item queries all the others by `metric` (cosine | euclidean); scores overall and per label.

    recall@k: share of queries with at least one same-label item in their top k (the "Recall@K"
    of product-retrieval papers). mAP@k: mean over queries of AP@k = sum_{i<=k} P@i * rel_i /
    min(k, number of other same-label items). Queries whose label has no other item are skipped.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    labels = np.asarray(labels)
    n = len(labels)
    if vectors.shape[0] != n:
        raise ValueError("one label per vector")
    k_max = min(max([*map_ks, *recall_ks]), n - 1)
    if k_max < 1:
        raise ValueError("need at least two items")
    ranked = nearest(vectors, k_max, metric=metric)
    rel = labels[ranked] == labels[:, None]  # (n, k_max): is the i-th neighbour relevant?
    n_rel = np.array([np.count_nonzero(labels == lab) - 1 for lab in labels])
    precision_at = np.cumsum(rel, axis=1) / np.arange(1, k_max + 1)
    per_query = {}
    for k in map_ks:
        kk = min(k, k_max)
        ap = (precision_at[:, :kk] * rel[:, :kk]).sum(axis=1) / np.maximum(np.minimum(kk, n_rel), 1)
        per_query[f"mAP@{k}"] = ap
    for k in recall_ks:
        per_query[f"R@{k}"] = rel[:, : min(k, k_max)].any(axis=1).astype(np.float64)
    valid = n_rel > 0

    def summarise(mask: np.ndarray) -> dict:
        mask = mask & valid
        out = {name: float(v[mask].mean()) if mask.any() else float("nan") for name, v in per_query.items()}
        out["queries"] = int(mask.sum())
        return out

    return {
        "overall": summarise(np.ones(n, dtype=bool)),
        "per_class": {str(lab): summarise(labels == lab) for lab in _ordered_unique(labels)},
    }


def nearest(vectors: np.ndarray, k: int, *, metric: str = "cosine") -> np.ndarray:
    """(n, k) indices of each row's k nearest other rows (leave-one-out), nearest first."""
    vectors = np.asarray(vectors, dtype=np.float32)
    k = min(k, len(vectors) - 1)
    if metric == "cosine":
        return _top_k(vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12), k)
    if metric == "euclidean":
        return _top_k(vectors, k, penalty=(vectors.astype(np.float64) ** 2).sum(axis=1))
    raise ValueError(f"unknown metric {metric!r}")


def raw_pixel_vectors(images: Sequence[Image.Image], side: int = RAW_SIDE) -> np.ndarray:
    """The baseline: each image as a side x side RGB thumbnail, flattened (compare with metric="euclidean").

    Euclidean, not cosine: cosine on raw pixels is blind to brightness and colour intensity (two
    flat images of different colours are parallel vectors), which would handicap the baseline.
    """
    return np.stack(
        [
            np.asarray(im.convert("RGB").resize((side, side), Image.BILINEAR), dtype=np.float32).ravel() / 255.0
            for im in images
        ]
    )


def _top_k(vectors: np.ndarray, k: int, penalty: np.ndarray | None = None, block: int = 1024) -> np.ndarray:
    # Blocked so 20k-image evaluations do not build a 20k x 20k similarity matrix at once.
    # Score = a.b (cosine on unit rows) or 2 a.b - |b|^2, which ranks like -|a - b|^2 for a fixed a.
    n = vectors.shape[0]
    out = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, block):
        sims = vectors[start : start + block].astype(np.float64) @ vectors.T.astype(np.float64)
        if penalty is not None:
            sims = 2 * sims - penalty[None, :]
        rows = np.arange(sims.shape[0])
        sims[rows, rows + start] = -np.inf  # leave-one-out: a query never retrieves itself
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1, kind="stable")
        out[start : start + block] = np.take_along_axis(part, order, axis=1)
    return out


def _ordered_unique(labels: np.ndarray) -> list:
    seen, out = set(), []
    for lab in labels.tolist():
        if lab not in seen:
            seen.add(lab)
            out.append(lab)
    return sorted(out, key=str) if all(isinstance(x, str) for x in out) else sorted(out)
