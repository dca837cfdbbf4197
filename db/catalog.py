"""Catalog writes for the ingest worker. Every function takes a session and never commits:
the worker writes product, images and items in one transaction.

Idempotency: a product row at version V means version V is fully indexed, so an event whose
version is not newer than the stored one changes nothing (duplicates, redeliveries, late
out-of-order events). A delete leaves a tombstone row with its version for the same reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
from sqlalchemy import delete, select, text
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
    extra: dict = field(default_factory=dict)


def stored_state(session: Session, tenant_id: str, external_id: str, *, lock: bool = True) -> tuple[int, int] | None:
    """(product id, version) of the stored product (row-locked until the transaction ends), or None."""
    q = select(Product.id, Product.version).where(Product.tenant_id == tenant_id, Product.external_id == external_id)
    row = session.execute(q.with_for_update() if lock else q).first()
    return (row.id, row.version) if row else None


def known_image_hashes(session: Session, product_id: int, model_key: str) -> dict[str, str]:
    """url -> content hash of the product's images that are indexed with `model_key`."""
    rows = session.execute(
        select(ProductImage.url, ProductImage.content_hash)
        .where(ProductImage.product_id == product_id, ProductImage.status == "ok",
               select(Item.id).where(Item.image_id == ProductImage.id, Item.model == model_key).exists())
    )
    return {r.url: r.content_hash for r in rows}


def upsert_product(session: Session, event: CatalogEvent, images: list[ImageResult], *,
                   model_key: str, dim: int) -> int | None:
    """Write the product, its images and their items; returns the product id, or None if stale."""
    p = event.product
    now = datetime.now(timezone.utc)
    values = dict(
        tenant_id=event.tenant_id, external_id=p.id, version=p.version, title=p.title, category=p.category,
        price=p.price, currency=p.currency, in_stock=p.in_stock, attributes=p.attributes, deleted=False,
        last_event_id=event.event_id, updated_at=now, indexed_at=now,
    )
    stmt = insert(Product).values(**values)
    stmt = stmt.on_conflict_do_update(
        constraint="uq_products_tenant_external",
        set_={k: stmt.excluded[k] for k in values if k not in ("tenant_id", "external_id")},
        where=Product.version < stmt.excluded.version,
    ).returning(Product.id)
    product_id = session.scalar(stmt)
    if product_id is None:
        return None

    urls = [im.url for im in images]
    session.execute(delete(ProductImage).where(ProductImage.product_id == product_id,
                                               ProductImage.url.not_in(urls)))
    for im in images:
        image_id = _upsert_image(session, event.tenant_id, product_id, im, now)
        if im.status == "ok" and im.items is None:
            continue  # unchanged content: its items stay as they are
        session.execute(delete(Item).where(Item.image_id == image_id))
        if im.items:
            session.execute(insert(Item), [
                dict(tenant_id=event.tenant_id, product_id=product_id, image_id=image_id, kind=it.kind,
                     box=list(map(float, it.box)), label=it.label, score=float(it.score), model=model_key,
                     dim=dim, embedding=it.vector)
                for it in im.items
            ])
    return product_id


def _upsert_image(session: Session, tenant_id: str, product_id: int, im: ImageResult, now: datetime) -> int:
    values = dict(tenant_id=tenant_id, product_id=product_id, url=im.url, position=im.position,
                  status=im.status, failure_reason=im.reason, updated_at=now)
    if im.content_hash is not None:  # a failed re-fetch must not erase what we knew
        values.update(content_hash=im.content_hash, width=im.width, height=im.height)
    stmt = insert(ProductImage).values(**values)
    stmt = stmt.on_conflict_do_update(
        constraint="uq_product_images_product_url",
        set_={k: stmt.excluded[k] for k in values if k not in ("tenant_id", "product_id", "url")},
    ).returning(ProductImage.id)
    return session.scalar(stmt)


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

