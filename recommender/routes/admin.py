"""Experiment management for a tenant's admin key: create, list, start, stop, results."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from db import experiments as repo
from recommender.arms import ARMS
from recommender.deps import AdminTenant, SessionDep
from recommender.schemas import Problem

router = APIRouter(prefix="/v1", tags=["experiments"])


class ArmSpec(BaseModel):
    name: str = Field(description=f"One of: {', '.join(ARMS)}")
    weight: float = Field(gt=0, le=1)


class ExperimentIn(BaseModel):
    key: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")
    arms: list[ArmSpec] = Field(min_length=2)
    placement: str = Field("similar", max_length=64)
    traffic_fraction: float = Field(1.0, gt=0, le=1)
    primary_metric: Literal["ctr", "conversion", "revenue_per_user", "click_through", "ctr_per_user"] = "ctr"
    guardrails: list[str] = Field(default_factory=list, description="Metrics that must not get worse")
    planned_sample_size: int | None = Field(None, gt=0, description="Users (all arms together) the test is planned for")


class ExperimentOut(ExperimentIn):
    status: str
    created_at: datetime
    started_at: datetime | None
    stopped_at: datetime | None


def _out(e) -> ExperimentOut:
    return ExperimentOut(key=e.key, arms=e.arms, placement=e.placement, traffic_fraction=e.traffic_fraction,
                         primary_metric=e.primary_metric, guardrails=e.guardrails,
                         planned_sample_size=e.planned_sample_size, status=e.status, created_at=e.created_at,
                         started_at=e.started_at, stopped_at=e.stopped_at)


@router.post("/experiments", status_code=201, response_model=ExperimentOut,
             responses={401: {"model": Problem}, 409: {"model": Problem}, 422: {"model": Problem}})
def create(body: ExperimentIn, tenant: AdminTenant, session: SessionDep) -> ExperimentOut:
    """Create a draft experiment (weights must sum to 1)."""
    try:
        exp = repo.create_experiment(session, tenant.id, body.key, arms=[a.model_dump() for a in body.arms],
                                     placement=body.placement, traffic_fraction=body.traffic_fraction,
                                     primary_metric=body.primary_metric, guardrails=body.guardrails,
                                     planned_sample_size=body.planned_sample_size, allowed_arms=ARMS)
    except repo.ExperimentError as exc:
        raise HTTPException(409 if "already exists" in str(exc) else 422, str(exc)) from None
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    session.commit()
    return _out(exp)


@router.get("/experiments", response_model=list[ExperimentOut], responses={401: {"model": Problem}})
def list_all(tenant: AdminTenant, session: SessionDep) -> list[ExperimentOut]:
    return [_out(e) for e in repo.list_experiments(session, tenant.id)]


@router.post("/experiments/{key}/{action}", response_model=ExperimentOut,
             responses={401: {"model": Problem}, 404: {"model": Problem}, 409: {"model": Problem}})
def change(request: Request, key: str, action: Literal["start", "stop"], tenant: AdminTenant,
           session: SessionDep) -> ExperimentOut:
    """Start a draft (one running experiment per placement) or stop a running one."""
    if repo.get_experiment(session, tenant.id, key) is None:
        raise HTTPException(404, f"no experiment {key!r}")
    try:
        exp = (repo.start_experiment if action == "start" else repo.stop_experiment)(session, tenant.id, key)
    except repo.ExperimentError as exc:
        raise HTTPException(409, str(exc)) from None
    session.commit()
    # This process serves the change from the next request; other processes within their cache TTL.
    request.app.state.experiment_cache.invalidate(lambda k: k == (tenant.id, exp.placement))
    return _out(exp)


@router.get("/experiments/{key}/results", responses={401: {"model": Problem}, 404: {"model": Problem}})
async def results(request: Request, key: str, tenant: AdminTenant,
                  sequential: Annotated[bool, Query(description="Always-valid (peeking-safe) inference")] = False,
                  correction: Annotated[Literal["holm", "fdr_bh"], Query()] = "holm") -> dict:
    """The analysis report: per metric and arm n, value, CI, lift, p, adjusted p, SRM, power."""
    from db.experiment_stats import analyze
    from experiments.analysis import ReportOptions

    def _run():
        with request.app.state.engine.connect() as conn:
            return analyze(conn, tenant.id, key, ReportOptions(sequential=sequential, correction=correction))
    try:
        report = await run_in_threadpool(_run)
    except ValueError as exc:  # an invalid stored definition
        raise HTTPException(422, str(exc)) from None
    if report is None:
        raise HTTPException(404, f"no experiment {key!r} and no exposures for it")
    return report
