"""Catalog webhook ingress: verify the signature, validate, produce to Kafka, answer 202."""

from __future__ import annotations

import json
import logging
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter, ValidationError

from db.models import Tenant
from db.tenants import active_webhook_secrets
from recommender import signing
from recommender.deps import ProducerDep, SettingsDep
from recommender.schemas import Accepted, Problem
from streams.events import CatalogEvent
from streams.producer import BrokerUnavailable
from streams.topics import PRODUCT_EVENTS

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/catalog", tags=["catalog"])

MAX_BODY_BYTES = 5 * 1024 * 1024
MAX_BATCH = 500
_events = TypeAdapter(list[CatalogEvent])


def _load_tenant(request: Request, tenant_id: str) -> Tenant | None:
    with request.app.state.sessions() as session:
        return session.get(Tenant, tenant_id)


@router.post(
    "/events", status_code=202, response_model=Accepted,
    responses={401: {"model": Problem}, 404: {"model": Problem}, 413: {"model": Problem},
               422: {"model": Problem}, 503: {"model": Problem}},
    summary="Receive signed catalog events (one event, a list, or {\"events\": [...]})",
)
async def catalog_events(
    request: Request, settings: SettingsDep, producer: ProducerDep,
    x_vitrine_tenant: Annotated[str, Header(description="Tenant id")],
    x_vitrine_signature: Annotated[str | None, Header(description="t=<unix>,v1=<hex HMAC-SHA256>")] = None,
):
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise HTTPException(413, f"body is {len(body)} bytes; the limit is {MAX_BODY_BYTES}")
    tenant = await run_in_threadpool(_load_tenant, request, x_vitrine_tenant)
    if tenant is None:
        raise HTTPException(404, f"unknown tenant {x_vitrine_tenant!r}")
    try:
        signing.verify(x_vitrine_signature, body, active_webhook_secrets(tenant),
                       tolerance_s=settings.webhook_tolerance_s)
    except signing.SignatureError as exc:
        raise HTTPException(401, str(exc)) from None
    events = _parse(body, tenant.id)
    try:
        await producer.send_many(settings.topic(PRODUCT_EVENTS.name), [(e.key, e) for e in events])
    except BrokerUnavailable as exc:
        log.warning("catalog events of %s not accepted: %s", tenant.id, exc)
        return JSONResponse({"detail": "event broker unavailable; nothing was accepted, retry later"},
                            status_code=503, headers={"Retry-After": "5"})
    return Accepted(accepted=[e.event_id for e in events])


def _parse(body: bytes, tenant_id: str) -> list[CatalogEvent]:
    """Validate the body; 422 names the failing field (with the event's index in a batch)."""
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HTTPException(422, f"malformed JSON: {exc}") from None
    items = doc.get("events") if isinstance(doc, dict) and "events" in doc else doc
    items = items if isinstance(items, list) else [items]
    if not items:
        raise HTTPException(422, "no events in the body")
    if len(items) > MAX_BATCH:
        raise HTTPException(413, f"{len(items)} events in one batch; the limit is {MAX_BATCH}")
    try:
        events = _events.validate_python(items)
    except ValidationError as exc:
        raise HTTPException(422, [
            {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors(include_url=False)
        ]) from None
    for i, e in enumerate(events):
        if e.tenant_id != tenant_id:
            raise HTTPException(422, [{"loc": [i, "tenant_id"], "msg": f"does not match the signed tenant "
                                       f"{tenant_id!r}", "type": "tenant_mismatch"}])
    return events
