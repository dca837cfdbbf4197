"""Catalog writes for the ingest worker. Every function takes a session and never commits:
the worker writes product, images and items in one transaction.

Idempotency: a product row at version V means version V is fully indexed, so an event whose
version is not newer than the stored one changes nothing (duplicates, redeliveries, late
out-of-order events). A delete leaves a tombstone row with its version for the same reason.

Image rows: `ok` (indexed), `failed` (permanently: 404, not an image, refused address; the reason is
kept) or `pending` (failed transiently: timeout, 5xx, refused connection; the reason is kept and the
image is tried again, see `claim_pending_images`, with `updated_at` as the time of the last try).

Thumbnails (`product_images.thumbnail`, WebP from `vision.image.make_thumbnail`) are written with the image
row in the same transaction: a newly decoded image brings its own, an image written without one (unchanged,
not re-fetched, a transient failure) keeps the stored one, and a failed image has none.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
from sqlalchemy import delete, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.contracts import CatalogEvent
from db.models import Item, Product


@dataclass(frozen=True)
class ItemRow:
    kind: str
    box: tuple[float, float, float, float]
    label: str
    score: float
    vector: np.ndarray
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # deployed towers' vectors of the crop, by key


@dataclass
class ImageResult:
    """What the worker learned about one image URL of the event."""

    url: str
    position: int
    status: str  # ok | failed | pending (failed transiently: tried again later)
    reason: str | None = None
    content_hash: str | None = None
    width: int | None = None
    height: int | None = None
    items: list[ItemRow] | None = None  # None with status ok = unchanged, keep the stored items
    fetched: bool = True  # False: the URL was known and recent, so it was not downloaded again
    thumbnail: bytes | None = None  # WebP of a decoded image; None = keep the stored one (none if failed)


@dataclass(frozen=True)
class KnownImage:
    content_hash: str
    fetched_at: datetime | None
    has_thumbnail: bool = True  # False: indexed before thumbnails were stored (migration 0012)


@dataclass(frozen=True)
class PendingImage:
    """An image claimed for another try, with the product version it belonged to when claimed."""

    image_id: int
    tenant_id: str
    product_id: int
    version: int
    url: str
    position: int


@dataclass(frozen=True)
class DerivedModel:
    """A tenant's deployed model: its vectors are written with the backbone's, in the same transaction.

    A head: `transform` maps backbone vectors (n, d) to the model's (n, dim); `codes`, for a head with a
    code layer, maps them to (n, bits) 0/1 codes, stored on the rows of its vectors (`items.code`). A tower:
    `embed` maps the item crops to its vectors; the worker runs it beside the backbone and hands the
    vectors over in `ItemRow.extra` (an item without one is left for the deployment's sweep).
    """

    key: str
    dim: int
    transform: Callable[[np.ndarray], np.ndarray] | None = None
    codes: Callable[[np.ndarray], np.ndarray] | None = None
    bits: int | None = None
    embed: Callable[[list], np.ndarray] | None = None


def stored_states(
    session: Session, keys: list[tuple[str, str]], model_key: str
) -> dict[tuple[str, str], tuple[int, dict[str, KnownImage]]]:
    """For many (tenant, product) keys at once: (stored version, {url: its indexed image})."""
    if not keys:
        return {}
    rows = session.execute(
        text("""
        SELECT p.id, p.tenant_id, p.external_id, p.version
        FROM products p JOIN unnest(CAST(:t AS text[]), CAST(:p AS text[])) AS k(t, e)
          ON p.tenant_id = k.t AND p.external_id = k.e
    """),
        {"t": [k[0] for k in keys], "p": [k[1] for k in keys]},
    ).all()
    by_id = {r.id: (r.tenant_id, r.external_id) for r in rows}
    out = {(r.tenant_id, r.external_id): (r.version, {}) for r in rows}
    if by_id:
        images = session.execute(
            text("""
            SELECT pi.product_id, pi.url, pi.content_hash, pi.fetched_at, pi.thumbnail IS NOT NULL AS has_thumbnail
            FROM product_images pi
            WHERE pi.product_id = ANY(:ids) AND pi.status = 'ok'
              AND EXISTS (SELECT 1 FROM items i WHERE i.image_id = pi.id AND i.model = :m)
        """),
            {"ids": list(by_id), "m": model_key},
        ).all()
        for im in images:
            out[by_id[im.product_id]][1][im.url] = KnownImage(im.content_hash, im.fetched_at, im.has_thumbnail)
    return out


def upsert_product(
    session: Session,
    event: CatalogEvent,
    images: list[ImageResult],
    *,
    model_key: str,
    dim: int,
    derived: Mapping[str, Sequence[DerivedModel]] | None = None,
) -> int | None:
    """Write the product, its images and their items; returns the product id, or None if stale."""
    return upsert_products(session, [(event, images)], model_key=model_key, dim=dim, derived=derived)[0]


def upsert_products(
    session: Session,
    batch: list[tuple[CatalogEvent, list[ImageResult]]],
    *,
    model_key: str,
    dim: int,
    derived: Mapping[str, Sequence[DerivedModel]] | None = None,
) -> list[int | None]:
    """Set-based upsert_product for many products (distinct keys): about five statements per batch.

    Returns, per entry, the product id, or None where the stored version was not older.
    `derived`: per tenant, the deployed heads whose vectors are written beside the backbone's.
    Rows travel as one array per column through `unnest`: the SQL text is the same whatever the batch
    size, so it is compiled and prepared once, and no per-row parameters are rendered (a 256-product
    multi-row VALUES spent more time in SQLAlchemy's compiler than in Postgres).
    """
    if not batch:
        return []
    keys = [(e.tenant_id, e.product.id) for e, _ in batch]
    if len(set(keys)) != len(keys):
        raise ValueError("upsert_products needs distinct products; keep the newest event of each")
    now = datetime.now(UTC)
    products = [e.product for e, _ in batch]
    applied = {
        (r.tenant_id, r.external_id): r.id
        for r in session.execute(
            _UPSERT_PRODUCTS,
            {
                "t": [k[0] for k in keys],
                "e": [k[1] for k in keys],
                "v": [p.version for p in products],
                "title": [p.title for p in products],
                "cat": [p.category for p in products],
                "price": [None if p.price is None else str(p.price) for p in products],
                "cur": [p.currency for p in products],
                "stock": [p.in_stock for p in products],
                "attrs": [json.dumps(p.attributes) for p in products],
                "ev": [e.event_id for e, _ in batch],
                "now": now,
            },
        )
    }
    ids = [applied.get(k) for k in keys]
    live = [(pid, e, images) for pid, (e, images) in zip(ids, batch) if pid is not None]
    if not live:
        return ids
    pids = [pid for pid, _, _ in live]

    # Kept items (unchanged images) follow the product's stock and category.
    session.execute(
        text("""
        UPDATE items i SET in_stock = p.in_stock, category = p.category FROM products p
        WHERE p.id = i.product_id AND p.id = ANY(:pids)
          AND (i.in_stock IS DISTINCT FROM p.in_stock OR i.category IS DISTINCT FROM p.category)
    """),
        {"pids": pids},
    )
    images = [(pid, e, im) for pid, e, ims in live for im in ims]
    session.execute(
        text("""
        DELETE FROM product_images pi WHERE pi.product_id = ANY(:pids) AND NOT EXISTS (
            SELECT 1 FROM unnest(CAST(:k_pid AS bigint[]), CAST(:k_url AS text[])) AS k(pid, url)
            WHERE k.pid = pi.product_id AND k.url = pi.url)
    """),
        {"pids": pids, "k_pid": [pid for pid, _, _ in images], "k_url": [im.url for _, _, im in images]},
    )
    image_ids: dict[tuple[int, str], int] = {}
    if images:
        image_ids = {
            (r.product_id, r.url): r.id
            for r in session.execute(
                _UPSERT_IMAGES,
                {
                    "t": [e.tenant_id for _, e, _ in images],
                    "pid": [pid for pid, _, _ in images],
                    "url": [im.url for _, _, im in images],
                    "pos": [im.position for _, _, im in images],
                    "status": [im.status for _, _, im in images],
                    "reason": [im.reason for _, _, im in images],
                    "hash": [im.content_hash for _, _, im in images],
                    "w": [im.width for _, _, im in images],
                    "h": [im.height for _, _, im in images],
                    "fetched": [im.fetched for _, _, im in images],
                    "thumb": [im.thumbnail for _, _, im in images],
                    "now": now,
                },
            )
        }
    replaced = [(pid, e, im) for pid, e, im in images if not (im.status == "ok" and im.items is None)]
    if replaced:
        session.execute(
            text("DELETE FROM items WHERE image_id = ANY(:ids)"),
            {"ids": [image_ids[(pid, im.url)] for pid, _, im in replaced]},
        )
        rows = [(pid, e, image_ids[(pid, im.url)], it) for pid, e, im in replaced for it in (im.items or [])]
        if rows:
            boxes = [tuple(map(float, it.box)) for _, _, _, it in rows]
            params = {
                "t": [e.tenant_id for _, e, _, _ in rows],
                "pid": [pid for pid, _, _, _ in rows],
                "img": [img for _, _, img, _ in rows],
                "kind": [it.kind for _, _, _, it in rows],
                "x0": [b[0] for b in boxes],
                "y0": [b[1] for b in boxes],
                "x1": [b[2] for b in boxes],
                "y1": [b[3] for b in boxes],
                "label": [it.label for _, _, _, it in rows],
                "score": [float(it.score) for _, _, _, it in rows],
                "stock": [e.product.in_stock for _, e, _, _ in rows],
                "cat": [e.product.category for _, e, _, _ in rows],
            }
            vectors = [it.vector for _, _, _, it in rows]
            extras = [it.extra for _, _, _, it in rows]
            _insert_items(session, params, vectors, model_key=model_key, dim=dim, derived=derived, extras=extras)
    return ids


def _insert_items(
    session: Session,
    params: dict[str, list],
    vectors: list,
    *,
    model_key: str,
    dim: int,
    derived: Mapping[str, Sequence[DerivedModel]] | None,
    extras: Sequence[Mapping[str, np.ndarray]] | None = None,
) -> None:
    """Insert the backbone's items, then each deployed model's vectors of the same items (per tenant).

    A tower's vector missing from `extras` (the worker could not embed the crop) marks the tower's deployment
    for repair first, in this transaction: the items inserted after the mark get larger ids, so the deployment's
    sweep or repair pass (db/deployments.py) finds them once this commits, and not before."""
    for tenant, key in _tower_gaps(params["t"], derived, extras):
        session.execute(_MARK_REPAIR, {"t": tenant, "k": key})
    emb = [vector_text(v) for v in vectors]
    session.execute(_INSERT_ITEMS, {**params, "model": model_key, "dim": dim, "emb": emb, "code": [None] * len(emb)})
    if not derived:
        return
    tenants = params["t"]
    models = {m.key: m for t in set(tenants) for m in derived.get(t, ())}
    for model in models.values():
        rows = [i for i, t in enumerate(tenants) if any(m.key == model.key for m in derived.get(t, ()))]
        if model.transform is None:  # a tower: the vectors the worker computed from the crops
            rows = [i for i in rows if extras is not None and model.key in extras[i]]
            if rows:
                sub = {name: [values[i] for i in rows] for name, values in params.items()}
                emb = [vector_text(extras[i][model.key]) for i in rows]
                args = {**sub, "model": model.key, "dim": model.dim, "emb": emb, "code": [None] * len(emb)}
                session.execute(_INSERT_ITEMS, args)
            continue
        if not rows:
            continue
        sub = {name: [values[i] for i in rows] for name, values in params.items()}
        features = np.stack([np.asarray(vectors[i], dtype=np.float32) for i in rows])
        mapped = model.transform(features)
        codes = code_texts(model.codes(features)) if model.codes is not None else [None] * len(rows)
        session.execute(
            _INSERT_ITEMS,
            {**sub, "model": model.key, "dim": model.dim, "emb": [vector_text(v) for v in mapped], "code": codes},
        )


# The item id sequence's value now: every item inserted afterwards has a larger id. A lower mark is kept.
_MARK_REPAIR = text("""
    UPDATE model_deployments SET repair_from = least(coalesce(repair_from, s.v), s.v)
    FROM (SELECT coalesce(pg_sequence_last_value(pg_get_serial_sequence('items', 'id')::regclass), 0) AS v) s
    WHERE tenant_id = :t AND model_key = :k AND needs_images AND status IN ('embedding', 'ready')
""")


def _tower_gaps(
    tenants: list[str],
    derived: Mapping[str, Sequence[DerivedModel]] | None,
    extras: Sequence[Mapping[str, np.ndarray]] | None,
) -> set[tuple[str, str]]:
    """(tenant, tower key) of each deployed tower with a crop among these rows that has no vector of it."""
    return {
        (tenant, model.key)
        for i, tenant in enumerate(tenants)
        for model in (derived or {}).get(tenant, ())
        if model.transform is None and (extras is None or model.key not in extras[i])
    }


def code_texts(codes) -> list[str]:
    """Binary codes (n, bits): 0/1, boolean, or +-1 (a bit is set where the value is > 0), as Postgres bit strings."""
    bits = np.asarray(codes) > 0
    if bits.ndim != 2:
        raise ValueError(f"codes of shape {bits.shape}: expected (n, bits)")
    return ["".join("1" if b else "0" for b in row) for row in bits.tolist()]


def vector_text(vector) -> str:
    """pgvector's text form of a float32 vector; '%.9g' round-trips float32 exactly, ~3x faster than repr."""
    values = np.asarray(vector, dtype=np.float32).tolist()
    return "[" + ",".join(["%.9g" % v for v in values]) + "]"  # noqa: UP031  the fastest form (docstring)


_UPSERT_PRODUCTS = text("""
    INSERT INTO products (tenant_id, external_id, version, title, category, price, currency, in_stock, attributes,
                          deleted, last_event_id, updated_at, indexed_at)
    SELECT t, e, v, title, cat, price, cur, stock, attrs, false, ev, :now, :now
    FROM unnest(CAST(:t AS text[]), CAST(:e AS text[]), CAST(:v AS bigint[]), CAST(:title AS text[]),
                CAST(:cat AS text[]), CAST(:price AS numeric[]), CAST(:cur AS text[]), CAST(:stock AS boolean[]),
                CAST(:attrs AS jsonb[]), CAST(:ev AS text[])) AS k(t, e, v, title, cat, price, cur, stock, attrs, ev)
    ON CONFLICT ON CONSTRAINT uq_products_tenant_external DO UPDATE SET
        version = excluded.version, title = excluded.title, category = excluded.category, price = excluded.price,
        currency = excluded.currency, in_stock = excluded.in_stock, attributes = excluded.attributes,
        deleted = excluded.deleted, last_event_id = excluded.last_event_id, updated_at = excluded.updated_at,
        indexed_at = excluded.indexed_at
    WHERE products.version < excluded.version
    RETURNING id, tenant_id, external_id
""")

# A failed re-fetch (no hash) must not erase what we knew about the image: coalesce with the stored values.
# The thumbnail likewise, except for a failed image: what it showed is no longer the product's picture.
_UPSERT_IMAGES = text("""
    INSERT INTO product_images (tenant_id, product_id, url, position, status, failure_reason, updated_at,
                                content_hash, width, height, fetched_at, thumbnail)
    SELECT t, pid, url, pos, status, reason, :now, hash, w, h, CASE WHEN fetched THEN CAST(:now AS timestamptz) END,
           CASE WHEN status <> 'failed' THEN thumb END
    FROM unnest(CAST(:t AS text[]), CAST(:pid AS bigint[]), CAST(:url AS text[]), CAST(:pos AS integer[]),
                CAST(:status AS text[]), CAST(:reason AS text[]), CAST(:hash AS text[]), CAST(:w AS integer[]),
                CAST(:h AS integer[]), CAST(:fetched AS boolean[]), CAST(:thumb AS bytea[]))
         AS k(t, pid, url, pos, status, reason, hash, w, h, fetched, thumb)
    ON CONFLICT ON CONSTRAINT uq_product_images_product_url DO UPDATE SET
        position = excluded.position, status = excluded.status, failure_reason = excluded.failure_reason,
        updated_at = excluded.updated_at,
        content_hash = coalesce(excluded.content_hash, product_images.content_hash),
        width = coalesce(excluded.width, product_images.width),
        height = coalesce(excluded.height, product_images.height),
        fetched_at = coalesce(excluded.fetched_at, product_images.fetched_at),
        thumbnail = CASE WHEN excluded.status = 'failed' THEN NULL
                         ELSE coalesce(excluded.thumbnail, product_images.thumbnail) END
    RETURNING id, product_id, url
""")

_INSERT_ITEMS = text("""
    INSERT INTO items (tenant_id, product_id, image_id, kind, box, label, score, model, dim, embedding, in_stock,
                       category, code)
    SELECT t, pid, img, kind, ARRAY[x0, y0, x1, y1], label, score, :model, :dim, emb, stock, cat, code
    FROM unnest(CAST(:t AS text[]), CAST(:pid AS bigint[]), CAST(:img AS bigint[]), CAST(:kind AS text[]),
                CAST(:x0 AS float8[]), CAST(:y0 AS float8[]), CAST(:x1 AS float8[]), CAST(:y1 AS float8[]),
                CAST(:label AS text[]), CAST(:score AS float8[]), CAST(:emb AS vector[]), CAST(:stock AS boolean[]),
                CAST(:cat AS text[]), CAST(:code AS varbit[]))
         AS k(t, pid, img, kind, x0, y0, x1, y1, label, score, emb, stock, cat, code)
""")


def delete_product(session: Session, event: CatalogEvent) -> bool:
    """Mark the product deleted and drop its items at once; False if the event is stale.

    A delete for an unknown product still writes a tombstone, so a late, older upsert stays ignored.
    """
    p = event.product
    now = datetime.now(UTC)
    stmt = insert(Product).values(
        tenant_id=event.tenant_id,
        external_id=p.id,
        version=p.version,
        title=p.title,
        deleted=True,
        last_event_id=event.event_id,
        updated_at=now,
    )
    stmt = stmt.on_conflict_do_update(
        constraint="uq_products_tenant_external",
        set_={"version": stmt.excluded.version, "deleted": True, "last_event_id": event.event_id, "updated_at": now},
        where=Product.version < stmt.excluded.version,
    ).returning(Product.id)
    product_id = session.scalar(stmt)
    if product_id is None:
        return False
    session.execute(delete(Item).where(Item.product_id == product_id))
    return True


def catalog_counts(session: Session, tenant_id: str) -> dict[str, int]:
    """Products (live / deleted), images by status, and items of one tenant."""
    q = text("""
        SELECT
          (SELECT count(*) FROM products WHERE tenant_id = :t AND NOT deleted) AS products,
          (SELECT count(*) FROM products WHERE tenant_id = :t AND deleted) AS deleted,
          (SELECT count(*) FROM product_images WHERE tenant_id = :t AND status = 'ok') AS images_ok,
          (SELECT count(*) FROM product_images WHERE tenant_id = :t AND status = 'failed') AS images_failed,
          (SELECT count(*) FROM items WHERE tenant_id = :t) AS items
    """)
    return dict(session.execute(q, {"t": tenant_id}).mappings().one())


def claim_pending_images(session: Session, *, tried_before: datetime, limit: int) -> list[PendingImage]:
    """Up to `limit` pending images of live products last tried before `tried_before`, oldest first.

    They are marked as tried now, so a sweep of another worker (rows locked: SKIP LOCKED) or a later
    one (no longer due) does not take them again; the caller commits that at once.
    """
    rows = session.execute(
        text("""
        WITH due AS (
            SELECT pi.id FROM product_images pi JOIN products p ON p.id = pi.product_id
            WHERE pi.status = 'pending' AND pi.updated_at < :before AND NOT p.deleted
            ORDER BY pi.updated_at LIMIT :n
            FOR UPDATE OF pi SKIP LOCKED
        )
        UPDATE product_images pi SET updated_at = now() FROM due, products p
        WHERE pi.id = due.id AND p.id = pi.product_id
        RETURNING pi.id, pi.tenant_id, pi.product_id, p.version, pi.url, pi.position
    """),
        {"before": tried_before, "n": limit},
    ).all()
    return [PendingImage(r.id, r.tenant_id, r.product_id, r.version, r.url, r.position) for r in rows]


def store_retried_images(
    session: Session,
    retried: list[tuple[PendingImage, ImageResult]],
    *,
    model_key: str,
    dim: int,
    derived: Mapping[str, Sequence[DerivedModel]] | None = None,
) -> int:
    """Write the outcome of retried images and their items; returns how many were written.

    An image is written only if it is still pending and its product is still live at the version it
    was claimed at (locked here, so an event writing a newer version waits or has already won).
    """
    if not retried:
        return 0
    products = {
        r.id: r
        for r in session.execute(
            text("""
        SELECT id, version, in_stock, category FROM products WHERE id = ANY(:ids) AND NOT deleted
        ORDER BY id FOR UPDATE
    """),
            {"ids": sorted({im.product_id for im, _ in retried})},
        )
    }
    current = [
        (im, res) for im, res in retried if im.product_id in products and products[im.product_id].version == im.version
    ]
    if not current:
        return 0
    now = datetime.now(UTC)
    written = set(
        session.execute(
            text("""
        UPDATE product_images pi SET status = k.status, failure_reason = k.reason, updated_at = :now,
            content_hash = coalesce(k.hash, pi.content_hash), width = coalesce(k.w, pi.width),
            height = coalesce(k.h, pi.height),
            fetched_at = CASE WHEN k.fetched THEN CAST(:now AS timestamptz) ELSE pi.fetched_at END,
            thumbnail = CASE WHEN k.status = 'failed' THEN NULL ELSE coalesce(k.thumb, pi.thumbnail) END
        FROM unnest(CAST(:id AS bigint[]), CAST(:status AS text[]), CAST(:reason AS text[]), CAST(:hash AS text[]),
                    CAST(:w AS integer[]), CAST(:h AS integer[]), CAST(:fetched AS boolean[]), CAST(:thumb AS bytea[]))
             AS k(id, status, reason, hash, w, h, fetched, thumb)
        WHERE pi.id = k.id AND pi.status = 'pending'
        RETURNING pi.id
    """),
            {
                "id": [im.image_id for im, _ in current],
                "status": [r.status for _, r in current],
                "reason": [r.reason for _, r in current],
                "hash": [r.content_hash for _, r in current],
                "w": [r.width for _, r in current],
                "h": [r.height for _, r in current],
                "fetched": [r.fetched for _, r in current],
                "thumb": [r.thumbnail for _, r in current],
                "now": now,
            },
        ).scalars()
    )
    rows = [(im, it) for im, r in current if im.image_id in written for it in (r.items or [])]
    _insert_image_items(session, rows, products, model_key=model_key, dim=dim, derived=derived)
    return len(written)


def _insert_image_items(session, rows, products, *, model_key, dim, derived) -> None:
    """Insert (claimed image, ItemRow) pairs with their product's stock and category (locked rows)."""
    if not rows:
        return
    boxes = [tuple(map(float, it.box)) for _, it in rows]
    params = {
        "t": [im.tenant_id for im, _ in rows],
        "pid": [im.product_id for im, _ in rows],
        "img": [im.image_id for im, _ in rows],
        "kind": [it.kind for _, it in rows],
        "x0": [b[0] for b in boxes],
        "y0": [b[1] for b in boxes],
        "x1": [b[2] for b in boxes],
        "y1": [b[3] for b in boxes],
        "label": [it.label for _, it in rows],
        "score": [float(it.score) for _, it in rows],
        "stock": [products[im.product_id].in_stock for im, _ in rows],
        "cat": [products[im.product_id].category for im, _ in rows],
    }
    _insert_items(
        session,
        params,
        [it.vector for _, it in rows],
        model_key=model_key,
        dim=dim,
        derived=derived,
        extras=[it.extra for _, it in rows],
    )


# --- re-detection: the tenant's detector changed (db/detectors.py marks its images) ---------------------


@dataclass(frozen=True)
class MarkedImage:
    """An indexed image claimed for re-detection: what to fetch, and the mark it was claimed under."""

    image: PendingImage
    mark: str


def claim_redetect_images(
    session: Session, *, tried_before: datetime, limit: int, per_tenant: int
) -> list[MarkedImage]:
    """Up to `limit` marked images of live products (at most `per_tenant` of one tenant), last touched before
    `tried_before`; marked as touched now, so another sweep (SKIP LOCKED) or a later one does not take them again.

    The per-tenant cap keeps one large tenant's re-detection from delaying another's.
    """
    rows = session.execute(
        text("""
        WITH ranked AS (
            SELECT pi.id, row_number() OVER (PARTITION BY pi.tenant_id ORDER BY pi.updated_at, pi.id) AS n
            FROM product_images pi JOIN products p ON p.id = pi.product_id
            WHERE pi.redetect_for IS NOT NULL AND pi.status = 'ok' AND pi.updated_at < :before AND NOT p.deleted
        ), due AS (
            SELECT pi.id FROM product_images pi JOIN ranked r ON r.id = pi.id
            WHERE r.n <= :per_tenant ORDER BY r.n, pi.id LIMIT :n
            FOR UPDATE OF pi SKIP LOCKED
        )
        UPDATE product_images pi SET updated_at = now() FROM due, products p
        WHERE pi.id = due.id AND p.id = pi.product_id
        RETURNING pi.id, pi.tenant_id, pi.product_id, p.version, pi.url, pi.position, pi.redetect_for
    """),
        {"before": tried_before, "n": limit, "per_tenant": per_tenant},
    ).all()
    return [
        MarkedImage(PendingImage(r.id, r.tenant_id, r.product_id, r.version, r.url, r.position), r.redetect_for)
        for r in rows
    ]


def store_redetected_images(
    session: Session,
    done: list[tuple[MarkedImage, ImageResult]],
    *,
    model_key: str,
    dim: int,
    derived: Mapping[str, Sequence[DerivedModel]] | None = None,
) -> dict[str, int]:
    """Write re-detected images: new items replace the old ones (every model) in this transaction.

    Only an image still marked as claimed, of a product still live at the claimed version, is written. A fetch
    that failed for good clears the mark and keeps the items (they still show the product); one that failed
    for now keeps the mark, so a later sweep tries again. Returns counts: replaced, kept, retry, superseded.
    """
    counts = {"replaced": 0, "kept": 0, "retry": 0, "superseded": 0}
    if not done:
        return counts
    products = {
        r.id: r
        for r in session.execute(
            text("SELECT id, version, in_stock, category FROM products WHERE id = ANY(:ids) AND NOT deleted "
                 "ORDER BY id FOR UPDATE"),
            {"ids": sorted({m.image.product_id for m, _ in done})},
        )
    }  # fmt: skip
    now = datetime.now(UTC)
    replace, keep = [], []
    for m, r in done:
        p = products.get(m.image.product_id)
        if p is None or p.version != m.image.version:
            counts["superseded"] += 1
        elif r.status == "ok" and r.items is not None:
            replace.append((m, r))
        elif r.status == "failed":
            keep.append(m)
        else:
            counts["retry"] += 1
    if keep:
        cleared = session.execute(
            text("UPDATE product_images SET redetect_for = NULL WHERE id = ANY(:id) AND redetect_for = ANY(:mark)"),
            {"id": [m.image.image_id for m in keep], "mark": [m.mark for m in keep]},
        ).rowcount
        counts["kept"] += cleared
    if not replace:
        return counts
    written = set(
        session.execute(
            text("""
        UPDATE product_images pi SET redetect_for = NULL, updated_at = :now, content_hash = k.hash, width = k.w,
            height = k.h, fetched_at = :now, thumbnail = coalesce(k.thumb, pi.thumbnail)
        FROM unnest(CAST(:id AS bigint[]), CAST(:mark AS text[]), CAST(:hash AS text[]), CAST(:w AS integer[]),
                    CAST(:h AS integer[]), CAST(:thumb AS bytea[])) AS k(id, mark, hash, w, h, thumb)
        WHERE pi.id = k.id AND pi.redetect_for = k.mark AND pi.status = 'ok'
        RETURNING pi.id
    """),
            {
                "id": [m.image.image_id for m, _ in replace],
                "mark": [m.mark for m, _ in replace],
                "hash": [r.content_hash for _, r in replace],
                "w": [r.width for _, r in replace],
                "h": [r.height for _, r in replace],
                "thumb": [r.thumbnail for _, r in replace],
                "now": now,
            },
        ).scalars()
    )
    counts["superseded"] += len(replace) - len(written)
    counts["replaced"] += len(written)
    if not written:
        return counts
    session.execute(text("DELETE FROM items WHERE image_id = ANY(:ids)"), {"ids": sorted(written)})
    rows = [(m.image, it) for m, r in replace if m.image.image_id in written for it in r.items]
    _insert_image_items(session, rows, products, model_key=model_key, dim=dim, derived=derived)
    return counts
