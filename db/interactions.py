"""Interaction events into Postgres, exactly once per event id, feeding the popularity scores."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from core.contracts import InteractionEvent
from db.models import InteractionEvent as Row
from db.models import Tenant
from db.popularity import add_engagement


def known_tenants(session: Session, tenant_ids: set[str]) -> set[str]:
    return set(session.scalars(select(Tenant.id).where(Tenant.id.in_(tenant_ids)))) if tenant_ids else set()


def record_interactions(session: Session, events: list[InteractionEvent], *, half_life_s: float) -> int:
    """Insert the events not seen before (by tenant + event id); returns how many were new."""
    if not events:
        return 0
    stmt = insert(Row).values(
        [
            {
                "tenant_id": e.tenant_id,
                "event_id": e.event_id,
                "type": e.type,
                "user_id": e.user_id,
                "request_id": e.request_id,
                "product_id": e.product_id,
                "experiment": e.experiment,
                "arm": e.arm,
                "value": e.value,
                "payload": e.payload,
                "occurred_at": e.occurred_at,
            }
            for e in events
        ]
    )
    new = session.execute(
        stmt.on_conflict_do_nothing(constraint="uq_interaction_events_tenant_event").returning(
            Row.tenant_id, Row.product_id, Row.type, Row.occurred_at
        )
    ).all()
    # Only new rows move popularity, so a redelivered click is not counted twice.
    add_engagement(session, [(r.tenant_id, r.product_id, r.type, r.occurred_at) for r in new], half_life_s)
    return len(new)
