"""Catalog webhook ingress: verify the signature, validate, produce to Kafka, answer 202."""

from __future__ import annotations

import json
import logging
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import TypeAdapter, ValidationError

from core.contracts import CatalogEvent
from db.models import Tenant
from db.tenants import active_webhook_secrets
from recommender import ingress, signing
from recommender.deps import SettingsDep
from recommender.errors import JSONRoute, error_detail
from recommender.metrics import REJECTED
from recommender.schemas import Accepted, Problem

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 5 * 1024 * 1024
MAX_BATCH = 500
TENANT_ID = r"^[a-z0-9][a-z0-9-]{0,62}$"  # as db.tenants creates them
router = APIRouter(prefix="/v1/catalog", tags=["catalog"], route_class=JSONRoute, max_body_size=MAX_BODY_BYTES)
_events = TypeAdapter(list[CatalogEvent])


def reject(status: int, reason: str, detail) -> HTTPException:
    """An HTTP error for a refused webhook, counted by reason."""
    REJECTED.labels(reason).inc()
    return HTTPException(status, detail)


async def read_capped_body(request: Request, limit: int) -> bytes:
    """The raw body (needed for the HMAC), refused with 413 as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise reject(413, "too_large", f"body is {declared} bytes; the limit is {limit}")
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > limit:
            raise reject(413, "too_large", f"body is over the {limit} byte limit")
    return bytes(buf)


def load_tenant(request: Request, tenant_id: str) -> Tenant | None:
    with request.app.state.sessions() as session:
        return session.get(Tenant, tenant_id)


@router.post(
    "/events",
    status_code=202,
    response_model=Accepted,
    responses={
        401: {"model": Problem},
        404: {"model": Problem},
        413: {"model": Problem},
        422: {"model": Problem},
        503: {"model": Problem},
    },
    summary='Receive signed catalog events (one event, a list, or {"events": [...]})',
)
async def catalog_events(
    request: Request,
    settings: SettingsDep,
    x_vitrine_tenant: Annotated[str, Header(description="Tenant id", pattern=TENANT_ID)],
    x_vitrine_signature: Annotated[str | None, Header(description="t=<unix>,v1=<hex HMAC-SHA256>")] = None,
):
    body = await read_capped_body(request, MAX_BODY_BYTES)
    tenant = await run_in_threadpool(load_tenant, request, x_vitrine_tenant)
    if tenant is None:
        raise reject(404, "unknown_tenant", f"unknown tenant {x_vitrine_tenant!r}")
    try:
        signing.verify(
            x_vitrine_signature, body, active_webhook_secrets(tenant), tolerance_s=settings.webhook_tolerance_s
        )
    except signing.SignatureError as exc:
        raise reject(401, "signature", str(exc)) from None
    events = _parse(body, tenant.id)
    return await ingress.accept(request, tenant.id, events, source="webhook")


def _parse(body: bytes, tenant_id: str) -> list[CatalogEvent]:
    """Validate the body; 422 names the failing field (with the event's index in a batch)."""
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise reject(422, "malformed_json", f"malformed JSON: {exc}") from None
    except RecursionError:
        raise reject(422, "malformed_json", "malformed JSON: nested too deeply") from None
    items = doc.get("events") if isinstance(doc, dict) and "events" in doc else doc
    items = items if isinstance(items, list) else [items]
    if not items:
        raise reject(422, "invalid", "no events in the body")
    if len(items) > MAX_BATCH:
        raise reject(413, "too_large", f"{len(items)} events in one batch; the limit is {MAX_BATCH}")
    try:
        events = _events.validate_python(items)
    except ValidationError as exc:
        raise reject(422, "invalid", error_detail(exc.errors(include_url=False))) from None
    for i, e in enumerate(events):
        if e.tenant_id != tenant_id:
            raise reject(
                422,
                "invalid",
                [
                    {
                        "loc": [i, "tenant_id"],
                        "msg": f"does not match the signed tenant {tenant_id!r}",
                        "type": "tenant_mismatch",
                    }
                ],
            )
    return events
