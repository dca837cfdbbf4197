"""Re-embed a tenant's catalog from stored vectors: a head model maps the backbone's vectors, no image is fetched.

The items of the source model are read in id order, page by page, mapped by the caller's function and
written as items of the target model (same product, image, box, label, stock and category), then the
target model gets its HNSW index. Running it again replaces the target model's items: idempotent.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session

from db.catalog import vector_text
from db.models import Item
from db.vector_index import ensure_vector_index

_COPY_ITEMS = text("""
    INSERT INTO items (tenant_id, product_id, image_id, kind, box, label, score, model, dim, embedding, in_stock,
                       category)
    SELECT i.tenant_id, i.product_id, i.image_id, i.kind, i.box, i.label, i.score, :model, :dim, k.emb, i.in_stock,
           i.category
    FROM unnest(CAST(:ids AS bigint[]), CAST(:emb AS vector[])) AS k(id, emb)
    JOIN items i ON i.id = k.id AND i.tenant_id = :t
""")


def reembed_from_vectors(
    session: Session,
    tenant_id: str,
    *,
    source_key: str,
    target_key: str,
    dim: int,
    transform: Callable[[np.ndarray], np.ndarray],
    page: int = 2000,
) -> int:
    """Write `transform(vectors)` of the tenant's `source_key` items as its `target_key` items; returns how many."""
    session.execute(delete(Item).where(Item.tenant_id == tenant_id, Item.model == target_key))
    written, after = 0, 0
    while True:
        rows = session.execute(
            select(Item.id, Item.embedding)
            .where(Item.tenant_id == tenant_id, Item.model == source_key, Item.id > after)
            .order_by(Item.id)
            .limit(page)
        ).all()
        if not rows:
            break
        ids = [r.id for r in rows]
        vectors = transform(np.stack([np.asarray(r.embedding, dtype=np.float32) for r in rows]))
        if vectors.shape != (len(rows), dim):
            raise ValueError(
                f"the model mapped {len(rows)} vectors to shape {vectors.shape}, expected ({len(rows)}, {dim})"
            )
        session.execute(
            _COPY_ITEMS,
            {"ids": ids, "emb": [vector_text(v) for v in vectors], "t": tenant_id, "model": target_key, "dim": dim},
        )
        written, after = written + len(rows), ids[-1]
    ensure_vector_index(session.connection(), target_key, dim)
    return written


def count_items(session: Session, tenant_id: str, model_key: str) -> int:
    """How many items of `model_key` the tenant has."""
    return session.scalar(
        select(func.count()).select_from(Item).where(Item.tenant_id == tenant_id, Item.model == model_key)
    )
