"""How far the worker has indexed the products a bulk import sent (`vitrine catalog import` follows it)."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

# A product counts once the worker stored this version or a newer one: indexed (with or without
# vectors: a product whose images all failed is indexed too) or deleted.
_DONE = text("""
    SELECT count(*) FROM products p
    JOIN unnest(CAST(:ids AS text[]), CAST(:versions AS bigint[])) AS f(id, v) ON p.external_id = f.id
    WHERE p.tenant_id = :t AND p.version >= f.v AND (p.indexed_at IS NOT NULL OR p.deleted)
""")


def count_done(session: Session, tenant_id: str, versions: dict[str, int]) -> int:
    """How many of `versions` (product id -> version sent) the worker has stored at that version or newer."""
    if not versions:
        return 0
    ids = list(versions)
    return int(session.scalar(_DONE, {"t": tenant_id, "ids": ids, "versions": [versions[i] for i in ids]}) or 0)
