"""Accept validated catalog events: de-duplicate by event id, produce, answer 202 or 503.

Shared by the vitrine webhook and the Shopify adapter, so both get the same guarantees:
an event id is produced at most once per acceptance, and nothing is acknowledged that Kafka
did not acknowledge.
"""

from __future__ import annotations

import logging

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from db import receipts
from recommender import metrics
from recommender.schemas import Accepted
from core.contracts import CatalogEvent
from streams.producer import BrokerUnavailable
from streams.topics import PRODUCT_EVENTS

log = logging.getLogger(__name__)


def _claim(request: Request, tenant_id: str, ids: list[str]) -> set[str]:
    with request.app.state.sessions.begin() as s:
        return receipts.claim(s, tenant_id, ids)


def _release(request: Request, tenant_id: str, ids: set[str]) -> None:
    with request.app.state.sessions.begin() as s:
        receipts.release(s, tenant_id, ids)


async def accept(request: Request, tenant_id: str, events: list[CatalogEvent], source: str):
    """Produce the events not seen before; 202 lists accepted and duplicate ids, 503 if Kafka is down."""
    new = await run_in_threadpool(_claim, request, tenant_id, [e.event_id for e in events])
    to_send, seen = [], set()
    for e in events:
        if e.event_id in new and e.event_id not in seen:
            to_send.append(e)
            seen.add(e.event_id)
    duplicates = sorted({e.event_id for e in events} - seen)
    settings = request.app.state.settings
    try:
        await request.app.state.producer.send_many(settings.topic(PRODUCT_EVENTS.name),
                                                   [(e.key, e) for e in to_send])
    except BrokerUnavailable as exc:
        await run_in_threadpool(_release, request, tenant_id, seen)
        metrics.CATALOG_EVENTS.labels(source, "broker_unavailable").inc(len(to_send))
        log.warning("%d catalog events of %s not accepted: %s", len(to_send), tenant_id, exc)
        return JSONResponse({"detail": "event broker unavailable; nothing was accepted, retry later"},
                            status_code=503, headers={"Retry-After": "5"})
    metrics.CATALOG_EVENTS.labels(source, "accepted").inc(len(to_send))
    metrics.CATALOG_EVENTS.labels(source, "duplicate").inc(len(duplicates))
    return Accepted(accepted=[e.event_id for e in to_send], duplicates=duplicates)
