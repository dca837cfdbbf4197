"""Experiment management for a tenant's admin key: create, list, start, stop, results."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.contracts import printable
from db import experiments as repo
from experiments.definition import DEFAULT_GUARDRAIL_MARGIN, METRICS, parse_guardrails
from recommender.arms import ARM_NAME, MAX_ARM_NAME
from recommender.deps import AdminTenant, SessionDep
from recommender.errors import JSONRoute
from recommender.schemas import Problem
from recommender.serving import check_arm_models

router = APIRouter(prefix="/v1", tags=["experiments"], route_class=JSONRoute)

KEY = r"^[A-Za-z0-9_.-]+$"
ExperimentKey = Annotated[str, Path(min_length=1, max_length=128, pattern=KEY)]


MAX_ARMS = 8


class ArmSpec(BaseModel):
    name: str = Field(
        max_length=MAX_ARM_NAME,
        pattern=ARM_NAME,
        description="`baseline`, `visual` (the tenant's active model) or `visual@<model key>` (a ready model "
        "of the tenant, or the pretrained embedder's key)",
    )
    weight: float = Field(gt=0, le=1)


class GuardrailSpec(BaseModel):
    metric: printable(64)
    margin: float = Field(
        DEFAULT_GUARDRAIL_MARGIN, gt=0, lt=1, description="Largest acceptable relative loss (0.02 = the lift >= -2 %)"
    )


class ExperimentIn(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "key": "visual-vs-baseline",
                    "arms": [{"name": "baseline", "weight": 0.5}, {"name": "visual", "weight": 0.5}],
                    "primary_metric": "ctr",
                }
            ]
        }
    )

    key: str = Field(min_length=1, max_length=128, pattern=KEY)
    arms: list[ArmSpec] = Field(
        min_length=2,
        max_length=MAX_ARMS,
        description="Each arm once; the weights must sum to 1 (within 1e-6), else 422",
    )
    placement: printable(64) = "similar"
    traffic_fraction: float = Field(1.0, gt=0, le=1)
    primary_metric: Literal[METRICS] = "ctr"
    guardrails: list[printable(64) | GuardrailSpec] = Field(
        default_factory=list,
        max_length=len(METRICS),
        description="Metrics that must not get worse: a metric name (margin 0.02) or {metric, margin}; "
        "each passes when non-inferiority against -margin is shown one-sided at alpha",
    )
    planned_sample_size: int | None = Field(
        None, gt=0, le=2**31 - 1, description="Users (all arms together) the test is planned for"
    )
    salt: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=KEY,
        description="Seed of the assignment hash; omit for a random one (the default: a new experiment reshuffles "
        "users). A fixed salt reproduces an assignment, e.g. of a simulation",
    )

    @field_validator("guardrails")
    @classmethod
    def _known_metrics(cls, value: list) -> list:
        # one precise message ("unknown guardrail metric 'x'; known: ...") instead of a union's two
        parse_guardrails([g if isinstance(g, str) else g.model_dump() for g in value])
        return value


class ExperimentOut(BaseModel):
    """An experiment as stored (also ones made by the CLI, so none of the input rules are re-checked here)."""

    key: str
    arms: list[dict]
    placement: str
    traffic_fraction: float
    primary_metric: str
    guardrails: list
    planned_sample_size: int | None
    status: str
    created_at: datetime
    started_at: datetime | None
    stopped_at: datetime | None


def _out(e) -> ExperimentOut:
    return ExperimentOut(
        key=e.key,
        arms=e.arms,
        placement=e.placement,
        traffic_fraction=e.traffic_fraction,
        primary_metric=e.primary_metric,
        guardrails=e.guardrails,
        planned_sample_size=e.planned_sample_size,
        status=e.status,
        created_at=e.created_at,
        started_at=e.started_at,
        stopped_at=e.stopped_at,
    )


@router.post(
    "/experiments",
    status_code=201,
    response_model=ExperimentOut,
    responses={401: {"model": Problem}, 409: {"model": Problem}, 413: {"model": Problem}, 422: {"model": Problem}},
)
def create(body: ExperimentIn, request: Request, tenant: AdminTenant, session: SessionDep) -> ExperimentOut:
    """Create a draft experiment (weights must sum to 1; every `visual@<key>` model ready for the tenant)."""
    try:
        check_arm_models(
            session, tenant.id, [a.name for a in body.arms], embedder_key=request.app.state.embedder.model_key
        )
        exp = repo.create_experiment(
            session,
            tenant.id,
            body.key,
            arms=[a.model_dump() for a in body.arms],
            placement=body.placement,
            traffic_fraction=body.traffic_fraction,
            primary_metric=body.primary_metric,
            guardrails=[g if isinstance(g, str) else g.model_dump() for g in body.guardrails],
            planned_sample_size=body.planned_sample_size,
            salt=body.salt,
        )
    except repo.ExperimentError as exc:
        raise HTTPException(409 if "already exists" in str(exc) else 422, str(exc)) from None
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    session.commit()
    return _out(exp)


@router.get("/experiments", response_model=list[ExperimentOut], responses={401: {"model": Problem}})
def list_all(tenant: AdminTenant, session: SessionDep) -> list[ExperimentOut]:
    """The tenant's experiments, oldest first."""
    return [_out(e) for e in repo.list_experiments(session, tenant.id)]


def _change(request: Request, key: str, action: str, tenant, session) -> ExperimentOut:
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


# Two paths, not one `/{action}`: that pattern also matched `/results`, so POST .../results was a 422
# instead of a 405 and a 405 there named POST only.
@router.post(
    "/experiments/{key}/start",
    response_model=ExperimentOut,
    responses={401: {"model": Problem}, 404: {"model": Problem}, 409: {"model": Problem}},
)
def start(request: Request, key: ExperimentKey, tenant: AdminTenant, session: SessionDep) -> ExperimentOut:
    """Start a draft (one running experiment per placement)."""
    return _change(request, key, "start", tenant, session)


@router.post(
    "/experiments/{key}/stop",
    response_model=ExperimentOut,
    responses={401: {"model": Problem}, 404: {"model": Problem}, 409: {"model": Problem}},
)
def stop(request: Request, key: ExperimentKey, tenant: AdminTenant, session: SessionDep) -> ExperimentOut:
    """Stop a running experiment."""
    return _change(request, key, "stop", tenant, session)


@router.get("/experiments/{key}/results", responses={401: {"model": Problem}, 404: {"model": Problem}})
async def results(
    request: Request,
    key: ExperimentKey,
    tenant: AdminTenant,
    sequential: Annotated[bool, Query(description="Always-valid (peeking-safe) inference")] = False,
    correction: Annotated[Literal["holm", "fdr_bh"], Query()] = "holm",
) -> dict:
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
