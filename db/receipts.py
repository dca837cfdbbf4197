"""Which catalog event ids were already accepted (so a retried webhook is not produced twice)."""

from __future__ import annotations

from sqlalchemy import delete, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from db.models import EventReceipt


def claim(session: Session, tenant_id: str, event_ids: list[str]) -> set[str]:
    """Record the ids; returns those that were new (the caller produces only these)."""
    if not event_ids:
        return set()
    stmt = insert(EventReceipt).values([{"tenant_id": tenant_id, "event_id": e} for e in event_ids])
    rows = session.execute(stmt.on_conflict_do_nothing().returning(EventReceipt.event_id))
    return {r.event_id for r in rows}


def release(session: Session, tenant_id: str, event_ids: set[str]) -> None:
    """Forget claims whose produce failed, so the retry is accepted."""
    if event_ids:
        session.execute(delete(EventReceipt).where(
            tuple_(EventReceipt.tenant_id, EventReceipt.event_id).in_([(tenant_id, e) for e in event_ids])))
