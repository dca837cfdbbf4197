"""Storefront interaction events (click, add_to_cart, purchase) into Kafka, validated before they are acknowledged."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError

from core.contracts import InteractionEvent, printable, utcnow
from recommender.deps import StorefrontTenant
from recommender.errors import JSONRoute
from recommender.schemas import Accepted, Problem
from streams.producer import BrokerUnavailable
from streams.topics import INTERACTIONS

router = APIRouter(prefix="/v1", tags=["storefront"], route_class=JSONRoute)
MAX_BATCH = 500


class StorefrontEvent(BaseModel):
    """What a storefront reports; the tenant comes from its key, never from the body."""

    model_config = ConfigDict(extra="forbid")

    event_id: printable(200) = Field(description="Unique per event; repeats are ignored")
    type: Literal["click", "add_to_cart", "purchase"]
    user_id: printable(255)
    product_id: printable(255)
    request_id: printable(64) | None = Field(None, description="From the recommendation shown (attribution)")
    value: float | None = Field(None, ge=0, allow_inf_nan=False, description="Revenue, for purchases")
    occurred_at: AwareDatetime = Field(
        default_factory=utcnow,
        description="With its UTC offset; at most VITRINE_EVENT_MAX_AGE_S old (7 days) and "
        "VITRINE_EVENT_MAX_FUTURE_S ahead (5 minutes) of the API's clock",
    )


def _shape(body) -> str:
    return "events" if isinstance(body, list) else "event"


# One event or a list; the discriminator validates only the shape sent, so a 422 names one location
# ("body", "event", field) or ("body", "events", index, field) instead of a failure per shape.
Events = Annotated[
    Annotated[StorefrontEvent, Tag("event")]
    | Annotated[Annotated[list[StorefrontEvent], Field(min_length=1, max_length=MAX_BATCH)], Tag("events")],
    Discriminator(_shape),
]


def _contract_events(batch: list[StorefrontEvent], tenant_id: str, shape: str, settings) -> list[InteractionEvent]:
    """The events as they go on the wire; RequestValidationError naming each one outside the time window."""

    def loc(i: int, *field) -> tuple:
        return ("body", shape, *field) if shape == "event" else ("body", shape, i, *field)

    now = utcnow()
    earliest, latest = (
        now - timedelta(seconds=settings.event_max_age_s),
        now + timedelta(seconds=settings.event_max_future_s),
    )
    out, problems = [], []
    for i, e in enumerate(batch):
        if not earliest <= e.occurred_at <= latest:  # an old event would distort the decayed popularity
            problems.append(
                {
                    "type": "occurred_at_window",
                    "loc": loc(i, "occurred_at"),
                    "msg": f"must lie between {earliest:%Y-%m-%dT%H:%M:%SZ} and {latest:%Y-%m-%dT%H:%M:%SZ}",
                }
            )
            continue
        try:
            out.append(InteractionEvent(tenant_id=tenant_id, **e.model_dump()))
        except ValidationError as exc:  # the rules above are the stricter ones; still a 422, never a 500
            problems += [{**err, "loc": loc(i, *err["loc"])} for err in exc.errors(include_url=False)]
    if problems:
        raise RequestValidationError(problems)
    return out


@router.post(
    "/events",
    status_code=202,
    response_model=Accepted,
    responses={401: {"model": Problem}, 413: {"model": Problem}, 422: {"model": Problem}, 503: {"model": Problem}},
)
async def events(request: Request, tenant: StorefrontTenant, body: Annotated[Events, Body()]):
    """Record clicks, add-to-carts and purchases (one event or a list of at most 500)."""
    settings = request.app.state.settings
    out = _contract_events(body if isinstance(body, list) else [body], tenant.id, _shape(body), settings)
    try:
        # Acknowledged before 202: a click or purchase is worth the broker round trip.
        await request.app.state.producer.send_many(settings.topic(INTERACTIONS.name), [(e.key, e) for e in out])
    except BrokerUnavailable:
        return JSONResponse(
            {"detail": "event broker unavailable; retry later"}, status_code=503, headers={"Retry-After": "5"}
        )
    return Accepted(accepted=[e.event_id for e in out])
