"""Storefront interaction events (click, add_to_cart, purchase) into Kafka."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from recommender.deps import StorefrontTenant
from recommender.schemas import Accepted, Problem
from core.contracts import InteractionEvent, utcnow
from streams.producer import BrokerUnavailable
from streams.topics import INTERACTIONS

router = APIRouter(prefix="/v1", tags=["storefront"])


class StorefrontEvent(BaseModel):
    """What a storefront reports; the tenant comes from its key, never from the body."""

    model_config = ConfigDict(extra="forbid")

    event_id: str = Field(min_length=1, max_length=200, description="Unique per event; repeats are ignored")
    type: Literal["click", "add_to_cart", "purchase"]
    user_id: str = Field(min_length=1, max_length=255)
    product_id: str = Field(min_length=1, max_length=255)
    request_id: str | None = Field(None, max_length=64, description="From the recommendation shown (attribution)")
    value: float | None = Field(None, ge=0, description="Revenue, for purchases")
    occurred_at: datetime = Field(default_factory=utcnow)


@router.post("/events", status_code=202, response_model=Accepted,
             responses={401: {"model": Problem}, 422: {"model": Problem}, 503: {"model": Problem}})
async def events(request: Request, tenant: StorefrontTenant,
                 body: Annotated[StorefrontEvent | list[StorefrontEvent], Body()]):
    """Record clicks, add-to-carts and purchases (one event or a list of at most 500)."""
    batch = body if isinstance(body, list) else [body]
    if not 1 <= len(batch) <= 500:
        return JSONResponse({"detail": "send between 1 and 500 events"}, status_code=422)
    out = [InteractionEvent(tenant_id=tenant.id, **e.model_dump()) for e in batch]
    settings = request.app.state.settings
    try:
        # Acknowledged before 202: a click or purchase is worth the broker round trip.
        await request.app.state.producer.send_many(settings.topic(INTERACTIONS.name), [(e.key, e) for e in out])
    except BrokerUnavailable:
        return JSONResponse({"detail": "event broker unavailable; retry later"}, status_code=503,
                            headers={"Retry-After": "5"})
    return Accepted(accepted=[e.event_id for e in out])
