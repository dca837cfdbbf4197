"""Vector search over items, aggregated to products.

The model key and dimension are spliced into the SQL as literals (validated): the HNSW indexes
are partial indexes `WHERE model = '<key>'`, and a generic prepared plan with `model = $1`
could not prove that predicate and would fall back to a sequential scan.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

from db.vector_index import _MODEL_KEY, vector_expr


@dataclass(frozen=True)
class Neighbour:
    product_id: str  # the tenant's external id
    title: str
    category: str | None
    price: float | None
    image_url: str | None
    distance: float  # cosine distance of the best-matching item pair

    @property
    def score(self) -> float:
        """Cosine similarity, 1 = identical."""
        return 1.0 - self.distance


def similar_products(session: Session, *, tenant_id: str, external_id: str, model_key: str, dim: int,
                     limit: int = 10, per_item_k: int = 40, ef_search: int = 100) -> list[Neighbour] | None:
    """Products of the same tenant nearest to any item of `external_id`; None if it has no vectors.

    Each item of the query product searches its `per_item_k` nearest items (HNSW, iterative scan
    so the tenant filter cannot starve the list); a candidate product scores its best item match.
    """
    if not _MODEL_KEY.match(model_key):
        raise ValueError(f"invalid model key {model_key!r}")
    session.execute(text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
    session.execute(text(f"SET LOCAL hnsw.ef_search = {int(max(ef_search, per_item_k))}"))
    expr_i, expr_q = vector_expr(dim, "i.embedding"), vector_expr(dim, "q.embedding")
    sql = text(f"""
        WITH src AS (
            SELECT id FROM products WHERE tenant_id = :tenant AND external_id = :pid AND NOT deleted
        ), q AS (
            SELECT it.embedding FROM items it JOIN src ON it.product_id = src.id
            WHERE it.model = '{model_key}'
        ), cand AS (
            SELECT c.product_id, min(c.dist) AS dist
            FROM q CROSS JOIN LATERAL (
                SELECT i.product_id, {expr_i} <=> {expr_q} AS dist
                FROM items i
                WHERE i.model = '{model_key}' AND i.tenant_id = :tenant
                  AND i.product_id <> (SELECT id FROM src)
                ORDER BY {expr_i} <=> {expr_q}
                LIMIT :k
            ) c
            GROUP BY c.product_id
        )
        SELECT p.external_id, p.title, p.category, p.price::float AS price, cand.dist,
               (SELECT url FROM product_images pi WHERE pi.product_id = p.id AND pi.status = 'ok'
                ORDER BY pi.position LIMIT 1) AS image_url,
               (SELECT count(*) FROM q) AS n_query
        FROM cand JOIN products p ON p.id = cand.product_id
        WHERE p.tenant_id = :tenant AND NOT p.deleted AND p.in_stock
        ORDER BY cand.dist, p.external_id
        LIMIT :limit
    """)
    rows = session.execute(sql, {"tenant": tenant_id, "pid": external_id, "k": per_item_k, "limit": limit}).all()
    if not rows:
        has_vectors = session.execute(text(
            f"SELECT 1 FROM items it JOIN products p ON p.id = it.product_id "
            f"WHERE p.tenant_id = :tenant AND p.external_id = :pid AND it.model = '{model_key}' LIMIT 1"
        ), {"tenant": tenant_id, "pid": external_id}).first()
        return [] if has_vectors else None
    return [Neighbour(r.external_id, r.title, r.category, r.price, r.image_url, float(r.dist)) for r in rows]
