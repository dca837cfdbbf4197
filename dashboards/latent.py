"""The latent map's data: one vector per product of one model, projected to 2-D, with categories and thumbnails.

One vector per product: the `whole` item (the whole-image vector every image gets, vision/items.py) of the
product's first image (lowest position) that has one for the model. That is the vector a product page's kNN
query starts from and the one training reads (`db.trained_models.catalog_training_rows`), so the map shows
the space the arms search, not an average no query ever uses. Deleted products are left out.

The projection is UMAP (umap-learn; fixed seed) of the L2-normalised vectors with the euclidean metric,
which orders neighbours exactly as cosine does (|a - b|^2 = 2 - 2 cos); a catalog under `UMAP_MIN_PRODUCTS`
gets PCA instead (UMAP needs neighbours to build its graph). Above `MAX_PRODUCTS` a seeded sample is
projected. Every query is scoped to one tenant; results are cached per (tenant, model, count of vectors,
newest item id), so a re-render or another visitor reuses them and a re-ingest recomputes.
"""

from __future__ import annotations

import base64
import io
import logging
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import streamlit as st
from PIL import Image, UnidentifiedImageError

from dashboards.data import LIST_TTL_S, engine
from vision.image import pil_open

log = logging.getLogger(__name__)

MAX_PRODUCTS = 5000  # points per map: above it a seeded sample (UMAP time and the page's payload grow with it)
SAMPLE_SEED = "latent-map-0"  # the sample is the products with the smallest md5(external_id || seed)
UMAP_MIN_PRODUCTS = 15  # below it: PCA (UMAP's default 15 neighbours need at least 16 points)
UMAP_NEIGHBOURS = 15
UMAP_MIN_DIST = 0.1
UMAP_SEED = 42
HOVER_SIDE = 80  # px: the longest side of a hover thumbnail (the stored one is 256 px, too heavy x 5,000)
HOVER_QUALITY = 70
TOP_CATEGORIES = 10  # colours beyond ~10 are hard to tell apart: the rest are drawn as OTHER
OTHER, NO_CATEGORY = "other", "(none)"
# Shown on hover for a product without a stored thumbnail: an empty `image` would be drawn by vega-tooltip as
# <img src="null">, a request for /null to the dashboard server and a broken picture.
NO_THUMBNAIL = "data:image/svg+xml;base64," + base64.b64encode(
    b'<svg xmlns="http://www.w3.org/2000/svg" width="80" height="60"><rect width="80" height="60" fill="#e6e6e6"/>'
    b'<text x="40" y="34" font-family="sans-serif" font-size="10" text-anchor="middle" fill="#555">'
    b"no thumbnail</text></svg>"
).decode("ascii")
MAP_TTL_S = 3600  # the key already changes with the vectors; the TTL only bounds the memory of old entries


@dataclass(frozen=True)
class CatalogVectors:
    """The products' vectors of one model (rows aligned), how many products have one, and what was left out."""

    product_ids: list[str]
    titles: list[str]
    categories: list[str | None]
    vectors: np.ndarray  # (n, dim) float32, L2-normalised
    total: int  # products of the tenant with a vector of the model (before the sample)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LatentMap:
    """2-D coordinates of a catalog under one model and how they were made."""

    model_key: str
    product_ids: list[str]
    titles: list[str]
    categories: list[str | None]
    xy: np.ndarray  # (n, 2)
    method: str  # "umap" | "pca"
    total: int
    dim: int
    seconds: float  # the projection's time (reading excluded)
    notes: list[str] = field(default_factory=list)


# --- reads (tenant-scoped) --------------------------------------------------------------------------------

# The first image's whole-image item per product; `items` carries tenant_id and model (ix_items_tenant_model_product).
_FIRSTS = """
    firsts AS (
        SELECT DISTINCT ON (it.product_id) it.product_id, it.id AS item_id
        FROM items it JOIN product_images pi ON pi.id = it.image_id
        WHERE it.tenant_id = %(t)s AND it.model = %(m)s AND it.kind = 'whole'
        ORDER BY it.product_id, pi.position, pi.id, it.id
    )"""


def _raw(database_url: str):
    """A pooled psycopg connection (closed back into the pool on exit)."""
    return engine(database_url).raw_connection()


@st.cache_data(ttl=LIST_TTL_S, show_spinner=False)
def vector_signature(database_url: str, tenant_id: str, model_key: str) -> tuple[int, int, str]:
    """(products with a vector of the model, newest such item id, their latest product update): the latent
    map's cache key, so new vectors and a changed title or category both recompute; (0, 0, '') without."""
    conn = _raw(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                f"""WITH {_FIRSTS}
                SELECT count(*), coalesce(max(f.item_id), 0), coalesce(max(p.updated_at)::text, '')
                FROM firsts f JOIN products p ON p.id = f.product_id AND p.tenant_id = %(t)s AND NOT p.deleted""",
                {"t": tenant_id, "m": model_key},
            )
            count, newest, updated = cur.fetchone()
        conn.rollback()
    finally:
        conn.close()
    return int(count), int(newest), str(updated)


def read_vectors(database_url: str, tenant_id: str, model_key: str, max_products: int = MAX_PRODUCTS) -> CatalogVectors:
    """The tenant's product vectors of `model_key` (one per product, see the module), a seeded sample above
    `max_products`, ordered by product id; vectors that are not finite or are zero are left out, with a note."""
    conn = _raw(database_url)
    try:
        # Binary: pgvector's wire form (int16 dim, int16 unused, dim big-endian float32) parses ~10x faster
        # than its text (as db.deployments.read_vectors does).
        with conn.driver_connection.cursor(binary=True) as cur:
            cur.execute(
                f"""WITH {_FIRSTS}, live AS (
                    SELECT p.external_id, p.title, p.category, f.item_id
                    FROM firsts f JOIN products p ON p.id = f.product_id AND p.tenant_id = %(t)s AND NOT p.deleted
                )
                SELECT l.external_id, l.title, l.category, it.embedding, (SELECT count(*) FROM live)
                FROM live l JOIN items it ON it.id = l.item_id AND it.tenant_id = %(t)s
                ORDER BY md5(l.external_id || %(seed)s), l.external_id
                LIMIT %(n)s""",
                {"t": tenant_id, "m": model_key, "seed": SAMPLE_SEED, "n": max_products},
            )
            rows = cur.fetchall()
        conn.rollback()
    finally:
        conn.close()
    rows.sort(key=lambda r: r[0])
    total = int(rows[0][4]) if rows else 0
    notes = []
    if total > len(rows):
        notes.append(f"a seeded sample of {len(rows):,} of the {total:,} products (the map's cap)")
    vectors = [np.frombuffer(r[3], dtype=">f4", offset=4).astype(np.float32) for r in rows]
    dims = Counter(len(v) for v in vectors)
    dim = dims.most_common(1)[0][0] if dims else 0
    keep = []
    for i, v in enumerate(vectors):
        norm = float(np.linalg.norm(v)) if len(v) == dim else 0.0
        if np.isfinite(norm) and norm > 0:
            keep.append(i)
    if len(keep) < len(rows):
        notes.append(f"{len(rows) - len(keep)} vector(s) left out: another dimension than {dim}, zero or not finite")
    matrix = np.stack([vectors[i] / np.linalg.norm(vectors[i]) for i in keep]) if keep else np.zeros((0, dim))
    return CatalogVectors(
        product_ids=[rows[i][0] for i in keep],
        titles=[rows[i][1] or "" for i in keep],
        categories=[rows[i][2] for i in keep],
        vectors=matrix.astype(np.float32),
        total=total,
        notes=notes,
    )


def read_thumbnails(database_url: str, tenant_id: str, product_ids: list[str]) -> dict[str, bytes]:
    """The stored thumbnail (WebP) of each product's first image that has one; products without any are absent."""
    if not product_ids:
        return {}
    conn = _raw(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                """SELECT DISTINCT ON (pi.product_id) p.external_id, pi.thumbnail
                FROM products p JOIN product_images pi ON pi.product_id = p.id AND pi.tenant_id = %(t)s
                WHERE p.tenant_id = %(t)s AND p.external_id = ANY(%(ids)s)
                  AND pi.status = 'ok' AND pi.thumbnail IS NOT NULL
                ORDER BY pi.product_id, pi.position, pi.id""",
                {"t": tenant_id, "ids": list(product_ids)},
            )
            found = {pid: bytes(thumb) for pid, thumb in cur}
        conn.rollback()
    finally:
        conn.close()
    return found


def hover_thumbnail(webp: bytes, side: int = HOVER_SIDE) -> str | None:
    """A data URL of `webp` re-encoded with its longest side at most `side` px; None if it cannot be decoded."""
    try:
        with pil_open(io.BytesIO(webp)) as im:
            if im.width * im.height > 4096 * 4096:  # stored thumbnails are 256 px: anything else is not one
                return None
            im.thumbnail((side, side), Image.Resampling.LANCZOS)
            out = io.BytesIO()
            im.convert("RGBA" if "A" in im.getbands() else "RGB").save(out, format="WEBP", quality=HOVER_QUALITY)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        log.warning("a stored thumbnail could not be decoded: %s", exc)
        return None
    return "data:image/webp;base64," + base64.b64encode(out.getvalue()).decode("ascii")


@st.cache_data(ttl=MAP_TTL_S, show_spinner="Preparing the thumbnails…", max_entries=8)
def hover_thumbnails(database_url: str, tenant_id: str, product_ids: tuple[str, ...]) -> dict[str, str]:
    """Product id -> hover thumbnail (data URL) for the products that have a decodable stored thumbnail."""
    urls = {
        pid: hover_thumbnail(webp) for pid, webp in read_thumbnails(database_url, tenant_id, list(product_ids)).items()
    }
    return {pid: u for pid, u in urls.items() if u is not None}


# --- the projection (pure) --------------------------------------------------------------------------------


def project(vectors: np.ndarray, seed: int = UMAP_SEED) -> tuple[np.ndarray, str]:
    """(n, 2) coordinates of L2-normalised `vectors` and the method: UMAP, or PCA below `UMAP_MIN_PRODUCTS`."""
    n = len(vectors)
    if n < UMAP_MIN_PRODUCTS:
        return pca_2d(vectors), "pca"
    import umap  # numba-compiled on first use: seconds, so only when a map is drawn

    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=min(UMAP_NEIGHBOURS, n - 1),
        min_dist=UMAP_MIN_DIST,
        metric="euclidean",
        random_state=seed,
        n_jobs=1,  # a random_state forces one thread anyway; saying so silences umap's warning
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs.*", category=UserWarning)
        xy = reducer.fit_transform(vectors)
    return np.asarray(xy, dtype=np.float64), "umap"


def pca_2d(vectors: np.ndarray) -> np.ndarray:
    """The first two principal components (signs fixed: each axis's largest loading positive); zeros if none."""
    n = len(vectors)
    out = np.zeros((n, 2))
    if n < 2:
        return out
    centred = vectors.astype(np.float64) - vectors.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    k = min(2, int((s > 1e-12).sum()))
    for j in range(k):
        axis = vt[j] * np.sign(vt[j][np.argmax(np.abs(vt[j]))])
        out[:, j] = centred @ axis
    return out


@st.cache_data(
    ttl=MAP_TTL_S,
    show_spinner="Projecting the catalog (UMAP; the first map after a restart also compiles it: ~10 s)…",
    max_entries=16,
)
def latent_map(
    database_url: str, tenant_id: str, model_key: str, signature: tuple[int, int, str], max_products: int = MAX_PRODUCTS
) -> LatentMap:
    """The tenant's catalog under `model_key` in 2-D; `signature` (`vector_signature`) is the cache key."""
    found = read_vectors(database_url, tenant_id, model_key, max_products)
    started = time.perf_counter()
    xy, method = project(found.vectors)
    seconds = time.perf_counter() - started
    log.info("latent map of %s/%s: %d products by %s in %.2f s", tenant_id, model_key, len(xy), method, seconds)
    return LatentMap(
        model_key=model_key,
        product_ids=found.product_ids,
        titles=found.titles,
        categories=found.categories,
        xy=xy,
        method=method,
        total=found.total,
        dim=int(found.vectors.shape[1]) if len(found.vectors) else 0,
        seconds=seconds,
        notes=found.notes,
    )


def colour_groups(categories: list[str | None], top: int = TOP_CATEGORIES) -> list[str]:
    """Each point's colour group: its category if among the `top` most common, else OTHER; NO_CATEGORY for None."""
    named = [c if c else NO_CATEGORY for c in categories]
    kept = {c for c, _ in sorted(Counter(named).items(), key=lambda kv: (-kv[1], kv[0]))[:top]}
    return [c if c in kept else OTHER for c in named]
