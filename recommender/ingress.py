"""Accept validated catalog events: de-duplicate by event id, produce, answer 202 or 503.

Shared by the vitrine webhook and the Shopify adapter, so both get the same guarantees:
nothing is acknowledged that Kafka did not acknowledge, and an event id counts as a duplicate
only once Kafka acknowledged it (db/receipts.py: claim, produce, mark acknowledged; a claim whose
request died before the ack is re-claimed after the lease, so the retailer's retry is accepted).
"""

from __future__ import annotations

import logging

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from core.contracts import CatalogEvent
from db import receipts
from recommender import metrics
from recommender.schemas import Accepted
from streams.producer import BrokerUnavailable
from streams.topics import PRODUCT_EVENTS

log = logging.getLogger(__name__)


def _claim(request: Request, tenant_id: str, ids: list[str]) -> receipts.Claim:
    with request.app.state.sessions.begin() as s:
        return receipts.claim(s, tenant_id, ids, request.app.state.settings.receipt_lease_s)


def _release(request: Request, tenant_id: str, claim: receipts.Claim) -> None:
    with request.app.state.sessions.begin() as s:
        receipts.release(s, tenant_id, claim.new, claim.token)


def _mark_acked(request: Request, tenant_id: str, ids: set[str]) -> None:
    try:
        with request.app.state.sessions.begin() as s:
            receipts.mark_acked(s, tenant_id, ids)
    except SQLAlchemyError as exc:
        # Kafka has the events, so the answer stays 202; unmarked, a retry after the lease
        # produces them again, which the worker absorbs (it skips versions it already has).
        log.warning(
            "%d catalog events of %s produced but not marked acknowledged: %s",
            len(ids),
            tenant_id,
            str(exc).splitlines()[0],
        )


async def accept(request: Request, tenant_id: str, events: list[CatalogEvent], source: str):
    """Produce the events not seen before; 202 lists accepted and duplicate ids, 503 if Kafka is down."""
    claim = await run_in_threadpool(_claim, request, tenant_id, [e.event_id for e in events])
    to_send, seen = [], set()
    for e in events:
        if e.event_id in claim.new and e.event_id not in seen:
            to_send.append(e)
            seen.add(e.event_id)
    duplicates = sorted({e.event_id for e in events} - seen - set(claim.in_flight))
    settings = request.app.state.settings
    try:
        await request.app.state.producer.send_many(settings.topic(PRODUCT_EVENTS.name), [(e.key, e) for e in to_send])
    except BrokerUnavailable as exc:
        await run_in_threadpool(_release, request, tenant_id, claim)
        metrics.CATALOG_EVENTS.labels(source, "broker_unavailable").inc(len(to_send))
        log.warning("%d catalog events of %s not accepted: %s", len(to_send), tenant_id, exc)
        return JSONResponse(
            {"detail": "event broker unavailable; nothing was accepted, retry later"},
            status_code=503,
            headers={"Retry-After": "5"},
        )
    await run_in_threadpool(_mark_acked, request, tenant_id, seen)
    metrics.CATALOG_EVENTS.labels(source, "accepted").inc(len(to_send))
    metrics.CATALOG_EVENTS.labels(source, "duplicate").inc(len(duplicates))
    if claim.in_flight:
        # Another request claimed these and has not seen Kafka's answer yet: neither a duplicate
        # nor accepted. After Retry-After each is either acknowledged (a duplicate) or re-claimable.
        metrics.CATALOG_EVENTS.labels(source, "in_flight").inc(len(claim.in_flight))
        return JSONResponse(
            {
                "detail": f"{len(claim.in_flight)} event(s) are being accepted by another request; retry them later",
                "accepted": [e.event_id for e in to_send],
                "duplicates": duplicates,
                "in_flight": sorted(claim.in_flight),
            },
            status_code=503,
            headers={"Retry-After": str(claim.retry_after_s)},
        )
    return Accepted(accepted=[e.event_id for e in to_send], duplicates=duplicates)
