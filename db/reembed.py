"""How many vectors of one model a tenant has (the re-embed itself is db/deployments.py)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import Item


def count_items(session: Session, tenant_id: str, model_key: str) -> int:
    """How many items of `model_key` the tenant has."""
    return session.scalar(
        select(func.count()).select_from(Item).where(Item.tenant_id == tenant_id, Item.model == model_key)
    )
