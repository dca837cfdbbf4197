"""Catalog writes for the ingest worker. Every function takes a session and never commits:
the worker writes product, images and items in one transaction.

Idempotency: a product row at version V means version V is fully indexed, so an event whose
version is not newer than the stored one changes nothing (duplicates, redeliveries, late
out-of-order events). A delete leaves a tombstone row with its version for the same reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
from sqlalchemy import delete, func, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from db.models import Item, Product, ProductImage
from streams.events import CatalogEvent


@dataclass(frozen=True)
class ItemRow:
    kind: str
    box: tuple[float, float, float, float]
    label: str
    score: float
    vector: np.ndarray


@dataclass
class ImageResult:
    """What the worker learned about one image URL of the event."""

    url: str
    position: int
    status: str  # ok | failed
    reason: str | None = None
    content_hash: str | None = None
    width: int | None = None
    height: int | None = None
    items: list[ItemRow] | None = None  # None with status ok = unchanged, keep the stored items
    fetched: bool = True  # False: the URL was known and recent, so it was not downloaded again


@dataclass(frozen=True)
class KnownImage:
    content_hash: str
    fetched_at: datetime | None


def stored_states(session: Session, keys: list[tuple[str, str]], model_key: str
                  ) -> dict[tuple[str, str], tuple[int, dict[str, KnownImage]]]:
    """For many (tenant, product) keys at once: (stored version, {url: its indexed image})."""
    if not keys:
        return {}
    rows = session.execute(text("""
        SELECT p.id, p.tenant_id, p.external_id, p.version
        FROM products p JOIN unnest(CAST(:t AS text[]), CAST(:p AS text[])) AS k(t, e)
          ON p.tenant_id = k.t AND p.external_id = k.e
    """), {"t": [k[0] for k in keys], "p": [k[1] for k in keys]}).all()
    by_id = {r.id: (r.tenant_id, r.external_id) for r in rows}
    out = {(r.tenant_id, r.external_id): (r.version, {}) for r in rows}
    if by_id:
        images = session.execute(text("""
            SELECT pi.product_id, pi.url, pi.content_hash, pi.fetched_at FROM product_images pi
            WHERE pi.product_id = ANY(:ids) AND pi.status = 'ok'
              AND EXISTS (SELECT 1 FROM items i WHERE i.image_id = pi.id AND i.model = :m)
        """), {"ids": list(by_id), "m": model_key}).all()
        for im in images:
            out[by_id[im.product_id]][1][im.url] = KnownImage(im.content_hash, im.fetched_at)
    return out


def upsert_product(session: Session, event: CatalogEvent, images: list[ImageResult], *,
                   model_key: str, dim: int) -> int | None:
    """Write the product, its images and their items; returns the product id, or None if stale."""
    return upsert_products(session, [(event, images)], model_key=model_key, dim=dim)[0]


def upsert_products(session: Session, batch: list[tuple[CatalogEvent, list[ImageResult]]], *,
                    model_key: str, dim: int) -> list[int | None]:
    """Set-based upsert_product for many products (distinct keys): about five statements per batch.

    Returns, per entry, the product id, or None where the stored version was not older.
    """
    if not batch:
        return []
    keys = [(e.tenant_id, e.product.id) for e, _ in batch]
    if len(set(keys)) != len(keys):
        raise ValueError("upsert_products needs distinct products; keep the newest event of each")
    now = datetime.now(timezone.utc)
    rows = [dict(tenant_id=e.tenant_id, external_id=e.product.id, version=e.product.version, title=e.product.title,
                 category=e.product.category, price=e.product.price, currency=e.product.currency,
                 in_stock=e.product.in_stock, attributes=e.product.attributes, deleted=False,
                 last_event_id=e.event_id, updated_at=now, indexed_at=now) for e, _ in batch]
    stmt = insert(Product).values(rows)
    stmt = stmt.on_conflict_do_update(
        constraint="uq_products_tenant_external",
        set_={k: stmt.excluded[k] for k in rows[0] if k not in ("tenant_id", "external_id")},
        where=Product.version < stmt.excluded.version,
    ).returning(Product.id, Product.tenant_id, Product.external_id)
    applied = {(r.tenant_id, r.external_id): r.id for r in session.execute(stmt)}
    ids = [applied.get(k) for k in keys]
    live = [(pid, e, images) for pid, (e, images) in zip(ids, batch) if pid is not None]
    if not live:
        return ids

    # Kept items (unchanged images) follow the product's stock and category.
    session.execute(text("""
        UPDATE items i SET in_stock = p.in_stock, category = p.category FROM products p
        WHERE p.id = i.product_id AND p.id = ANY(:pids)
          AND (i.in_stock IS DISTINCT FROM p.in_stock OR i.category IS DISTINCT FROM p.category)
    """), {"pids": [pid for pid, _, _ in live]})
    pairs = [(pid, im.url) for pid, _, images in live for im in images]
    session.execute(text("""
        DELETE FROM product_images pi WHERE pi.product_id = ANY(:pids) AND NOT EXISTS (
            SELECT 1 FROM unnest(CAST(:k_pid AS bigint[]), CAST(:k_url AS text[])) AS k(pid, url)
            WHERE k.pid = pi.product_id AND k.url = pi.url)
    """), {"pids": [pid for pid, _, _ in live], "k_pid": [p for p, _ in pairs], "k_url": [u for _, u in pairs]})
    image_rows = [dict(tenant_id=e.tenant_id, product_id=pid, url=im.url, position=im.position, status=im.status,
                       failure_reason=im.reason, updated_at=now, content_hash=im.content_hash, width=im.width,
                       height=im.height, fetched_at=now if im.fetched else None)
                  for pid, e, images in live for im in images]
    image_ids: dict[tuple[int, str], int] = {}
    if image_rows:
        ins = insert(ProductImage).values(image_rows)
        # A failed re-fetch (no hash) must not erase what we knew about the image.
        keep = {c: func.coalesce(ins.excluded[c], getattr(ProductImage, c))
                for c in ("content_hash", "width", "height", "fetched_at")}
        ins = ins.on_conflict_do_update(
            constraint="uq_product_images_product_url",
            set_={"position": ins.excluded.position, "status": ins.excluded.status,
                  "failure_reason": ins.excluded.failure_reason, "updated_at": ins.excluded.updated_at, **keep},
        ).returning(ProductImage.id, ProductImage.product_id, ProductImage.url)
        image_ids = {(r.product_id, r.url): r.id for r in session.execute(ins)}
    replaced = [(pid, e, im) for pid, e, images in live for im in images
                if not (im.status == "ok" and im.items is None)]
    if replaced:
        session.execute(delete(Item).where(Item.image_id.in_([image_ids[(pid, im.url)] for pid, _, im in replaced])))
        item_rows = [dict(tenant_id=e.tenant_id, product_id=pid, image_id=image_ids[(pid, im.url)], kind=it.kind,
                          box=list(map(float, it.box)), label=it.label, score=float(it.score), model=model_key,
                          dim=dim, embedding=it.vector, in_stock=e.product.in_stock, category=e.product.category)
                     for pid, e, im in replaced for it in (im.items or [])]
        if item_rows:
            session.execute(insert(Item), item_rows)
    return ids


def delete_product(session: Session, event: CatalogEvent) -> bool:
    """Mark the product deleted and drop its items at once; False if the event is stale.

    A delete for an unknown product still writes a tombstone, so a late, older upsert stays ignored.
    """
    p = event.product
    now = datetime.now(timezone.utc)
    stmt = insert(Product).values(
        tenant_id=event.tenant_id, external_id=p.id, version=p.version, title=p.title, deleted=True,
        last_event_id=event.event_id, updated_at=now,
    )
    stmt = stmt.on_conflict_do_update(
        constraint="uq_products_tenant_external",
        set_=dict(version=stmt.excluded.version, deleted=True, last_event_id=event.event_id, updated_at=now),
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

