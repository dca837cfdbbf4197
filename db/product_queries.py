"""Product reads for the storefront: existence, and the baseline arm's popular-in-category list."""

from __future__ import annotations

import math

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from db.models import Product
from db.vector_queries import Neighbour


def product_category(session: Session, tenant_id: str, external_id: str) -> tuple[bool, str | None]:
    """(exists and not deleted, its category)."""
    row = session.execute(
        select(Product.category).where(
            Product.tenant_id == tenant_id, Product.external_id == external_id, Product.deleted.is_(False)
        )
    ).first()
    return (row is not None, row.category if row else None)


def popular_in_category(
    session: Session, *, tenant_id: str, category: str | None, limit: int, half_life_s: float
) -> list[Neighbour]:
    """In-stock products of a category by decayed engagement, then newest first (what a shop has without vitrine).

    The caller drops the viewed product itself (ask for one more). Equality on the category (not
    IS NOT DISTINCT FROM) lets the (tenant_id, category) index find the category's rows instead of
    scanning every product of the tenant.
    """
    same = "p.category = :category" if category is not None else "p.category IS NULL"
    rows = session.execute(
        text(f"""
        SELECT p.external_id, p.title, p.category, p.price::float AS price,
               coalesce(pp.score * exp(-:lam * extract(epoch FROM (now() - pp.updated_at))), 0) AS popularity,
               (SELECT url FROM product_images pi WHERE pi.product_id = p.id AND pi.status = 'ok'
                ORDER BY pi.position LIMIT 1) AS image_url
        FROM products p
        LEFT JOIN product_popularity pp ON pp.tenant_id = p.tenant_id AND pp.product_id = p.external_id
        WHERE p.tenant_id = :tenant AND {same} AND NOT p.deleted AND p.in_stock
        ORDER BY popularity DESC, p.created_at DESC, p.external_id
        LIMIT :limit
    """),
        {"tenant": tenant_id, "category": category, "limit": limit, "lam": math.log(2) / half_life_s},
    ).all()
    # The baseline has no similarity; its score is the decayed popularity.
    return [
        Neighbour(r.external_id, r.title, r.category, r.price, r.image_url, 1.0 - float(r.popularity)) for r in rows
    ]
