"""Which catalog event ids Kafka has acknowledged (a retried webhook is not produced twice), and which are in flight.

A request claims its ids before producing, marks them acknowledged after Kafka's ack, and
releases them if the produce failed. An id counts as a duplicate only once acknowledged. A
claim that was never acknowledged, older than the lease, belonged to a request that died
between claim and ack: the next request re-claims it, so the retailer's retry is accepted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import delete, func, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from db.models import EventReceipt


@dataclass(frozen=True)
class Claim:
    """What one request may do with its ids: produce `new`; the others are acknowledged or in flight."""

    new: set[str] = field(default_factory=set)
    in_flight: dict[str, float] = field(default_factory=dict)  # id -> seconds until its lease ends
    token: datetime | None = None  # when `new` were claimed; `release` forgets only this claim

    @property
    def retry_after_s(self) -> int:
        """Seconds after which every in-flight id has a definite answer (acknowledged, or re-claimable)."""
        return max(1, math.ceil(max(self.in_flight.values(), default=1.0)))


def _key(tenant_id: str, event_ids):
    return tuple_(EventReceipt.tenant_id, EventReceipt.event_id).in_([(tenant_id, e) for e in event_ids])


def claim(session: Session, tenant_id: str, event_ids: list[str], lease_s: float) -> Claim:
    """Claim ids that are new, or whose unacknowledged claim outlived `lease_s`; report the others in flight."""
    ids = sorted(set(event_ids))
    if not ids:
        return Claim()
    lease = func.make_interval(0, 0, 0, 0, 0, 0, lease_s)
    stmt = insert(EventReceipt).values([{"tenant_id": tenant_id, "event_id": e} for e in ids])
    stmt = stmt.on_conflict_do_update(
        index_elements=[EventReceipt.tenant_id, EventReceipt.event_id],
        set_={"claimed_at": func.now()},
        where=EventReceipt.acked_at.is_(None) & (EventReceipt.claimed_at < func.now() - lease),
    ).returning(EventReceipt.event_id, EventReceipt.claimed_at)
    rows = session.execute(stmt).all()
    new = {r.event_id for r in rows}
    pending = (
        session.execute(
            select(
                EventReceipt.event_id,
                func.extract("epoch", EventReceipt.claimed_at + lease - func.now()).label("left_s"),
            ).where(_key(tenant_id, [e for e in ids if e not in new]), EventReceipt.acked_at.is_(None))
        ).all()
        if len(new) < len(ids)
        else []
    )
    return Claim(
        new=new, in_flight={r.event_id: float(r.left_s) for r in pending}, token=rows[0].claimed_at if rows else None
    )


def mark_acked(session: Session, tenant_id: str, event_ids: set[str]) -> None:
    """Kafka acknowledged these: from now on the same ids are duplicates."""
    if event_ids:
        session.execute(
            update(EventReceipt)
            .where(_key(tenant_id, event_ids), EventReceipt.acked_at.is_(None))
            .values(acked_at=func.now())
        )


def release(session: Session, tenant_id: str, event_ids: set[str], token: datetime | None) -> None:
    """Forget this request's unacknowledged claims (its produce failed), so the retry is accepted at once."""
    if event_ids and token is not None:
        # Only this claim: if the lease ran out meanwhile, another request may have re-claimed an id.
        session.execute(
            delete(EventReceipt).where(
                _key(tenant_id, event_ids), EventReceipt.acked_at.is_(None), EventReceipt.claimed_at == token
            )
        )
