"""Product reads: existence and the baseline arm's popular-in-category list (storefront), indexed items (worker)."""

from __future__ import annotations

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from db.models import Product
from db.popularity import decay_params, decay_sql
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
    scanning every product of the tenant. The decay is bounded (db/popularity.py): no stored time breaks it.
    """
    same = "p.category = :category" if category is not None else "p.category IS NULL"
    rows = session.execute(
        text(f"""
        SELECT p.external_id, p.title, p.category, p.price::float AS price,
               coalesce(pp.score * {decay_sql("now()", "pp.updated_at")}, 0) AS popularity,
               (SELECT url FROM product_images pi WHERE pi.product_id = p.id AND pi.status = 'ok'
                ORDER BY pi.position LIMIT 1) AS image_url
        FROM products p
        LEFT JOIN product_popularity pp ON pp.tenant_id = p.tenant_id AND pp.product_id = p.external_id
        WHERE p.tenant_id = :tenant AND {same} AND NOT p.deleted AND p.in_stock
        ORDER BY popularity DESC, p.created_at DESC, p.external_id
        LIMIT :limit
    """),
        {"tenant": tenant_id, "category": category, "limit": limit, **decay_params(half_life_s)},
    ).all()
    # The baseline has no similarity; its score is the decayed popularity.
    return [
        Neighbour(r.external_id, r.title, r.category, r.price, r.image_url, 1.0 - float(r.popularity)) for r in rows
    ]


def indexed_item_counts(session: Session, keys: list[tuple[str, str]], model_key: str) -> dict[tuple[str, str], int]:
    """For the live (not deleted) products among (tenant, external id) `keys`: their items of `model_key`.

    The worker's answer to a re-delivered event whose version is already stored: the product is indexed.
    """
    if not keys:
        return {}
    rows = session.execute(
        text("""
        SELECT p.tenant_id, p.external_id, count(i.id) AS n
        FROM products p
        JOIN unnest(CAST(:t AS text[]), CAST(:e AS text[])) AS k(t, e) ON p.tenant_id = k.t AND p.external_id = k.e
        LEFT JOIN items i ON i.product_id = p.id AND i.model = :m
        WHERE NOT p.deleted
        GROUP BY p.tenant_id, p.external_id
    """),
        {"t": [k[0] for k in keys], "e": [k[1] for k in keys], "m": model_key},
    ).all()
    return {(r.tenant_id, r.external_id): r.n for r in rows}
