"""GET /healthz: whether this API process can serve, with the state of the database and the broker."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from core import __version__
from recommender.errors import JSONRoute
from recommender.health import broker_state, database_state

router = APIRouter(tags=["ops"], route_class=JSONRoute)


class Dependency(BaseModel):
    ok: bool
    error: str | None = None
    buffered_events: int | None = None


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    version: str
    database: Dependency
    broker: Dependency


@router.get(
    "/healthz", response_model=Health, responses={503: {"model": Health, "description": "A dependency is down"}}
)
async def healthz(request: Request):
    """200 when Postgres and Kafka both answer, else 503 naming which does not (probed on each call, ~1 ms)."""
    state = request.app.state
    database = await database_state(state.engine)
    # Exposures wait in the send buffer: up to VITRINE_EXPOSURE_LINGER_S's worth normally, and growing while
    # the broker is down (how many then shows how long it has been).
    broker = await broker_state(state.settings.kafka_bootstrap, buffered_events=state.exposures.queue.qsize())
    health = Health(
        status="ok" if database["ok"] and broker["ok"] else "degraded",
        version=__version__,
        database=database,
        broker=broker,
    )
    return JSONResponse(health.model_dump(), status_code=200 if health.status == "ok" else 503)
