"""Catalog-adapted models for a tenant's admin key: start a training job, list jobs, read one with its card."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from db import trained_models as repo
from recommender import metrics, training_jobs
from recommender.deps import AdminTenant, SessionDep
from recommender.errors import JSONRoute
from recommender.schemas import Problem

router = APIRouter(prefix="/v1", tags=["models"], route_class=JSONRoute)

ModelRef = Annotated[
    str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.@-]+$", description="A job id or a model key")
]


class TrainIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Literal[training_jobs.METHODS]
    finetune: bool = Field(False, description="Also fine-tune the backbone's last blocks (slower), not only a head")
    holdout: float = Field(0.2, ge=0.05, le=0.5, description="Share of products held out for evaluation")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed of the split and the training")
    epochs: int | None = Field(None, ge=1, le=200, description="Training epochs; null = the method's default")
    bits: Literal[training_jobs.BITS] | None = Field(
        None, description="Binary code length of a quantization head; the triplet method only, else 422"
    )

    @model_validator(mode="after")
    def _bits_need_triplets(self) -> TrainIn:
        if self.bits is not None and self.method != "triplet":
            raise ValueError(f"bits is for the triplet method only (its quantization head), not {self.method}")
        return self


class JobStarted(BaseModel):
    job_id: str
    status: Literal["training"]
    links: dict[str, str] = Field(description="`self`: where to read the job's status")


class JobRunning(Problem):
    job_id: str = Field(description="The tenant's job still training (one at a time)")


class ModelOut(BaseModel):
    job_id: str
    method: str
    finetune: bool
    status: Literal["training", "ready", "failed"]
    reason: str | None = Field(description="Why the job failed (failed only)")
    model_key: str | None = Field(description="The model's content-addressed key (ready only)")
    created_at: datetime
    finished_at: datetime | None
    metrics: dict | None = Field(description="The held-out metrics of the model card (ready only)")


class ModelDetail(ModelOut):
    params: dict = Field(description="The hyperparameters asked for")
    card: dict | None = Field(description="The model card: method, data, hyperparameters, metrics, time, machine")


def _out(job, cls: type[ModelOut] = ModelOut) -> ModelOut:
    metrics_ = (job.card or {}).get("metrics")
    # The artefact's place on the server is the operator's business (`vitrine model show`), not the tenant's.
    card = None if job.card is None else {k: v for k, v in job.card.items() if k != "path"}
    extra = {"params": job.params, "card": card} if cls is ModelDetail else {}
    return cls(
        job_id=job.job_id,
        method=job.method,
        finetune=job.finetune,
        status=job.status,
        reason=job.reason,
        model_key=job.model_key,
        created_at=job.created_at,
        finished_at=job.finished_at,
        metrics=metrics_ if isinstance(metrics_, dict) else None,
        **extra,
    )


@router.post(
    "/models",
    status_code=202,
    response_model=JobStarted,
    responses={
        401: {"model": Problem},
        409: {"model": JobRunning},
        413: {"model": Problem},
        422: {"model": Problem, "description": "Invalid input, or a catalog too small to train on"},
        503: {"model": Problem},
    },
)
def train(body: TrainIn, request: Request, tenant: AdminTenant, session: SessionDep):
    """Start training a model on the tenant's indexed catalog, in its own process; poll `links.self`."""
    state = request.app.state
    try:
        job = training_jobs.start_training(
            session,
            tenant.id,
            training_jobs.TrainingRequest(**body.model_dump()),
            settings=state.settings,
            processes=state.training_processes,
            model_key=state.embedder.model_key,
        )
    except training_jobs.NotEnoughData as exc:
        metrics.INVALID_REQUESTS.labels("/v1/models", "not_enough_data").inc()
        raise HTTPException(422, str(exc)) from None
    except repo.JobAlreadyRunning as exc:
        return JSONResponse({"detail": str(exc), "job_id": exc.job_id}, status_code=409)
    except training_jobs.TrainingStartError as exc:
        session.commit()  # the job, failed with the reason
        raise HTTPException(503, str(exc)) from None
    session.commit()
    return JobStarted(job_id=job.job_id, status="training", links={"self": f"/v1/models/{job.job_id}"})


def _reaped(request: Request, tenant_id: str, session) -> None:
    if repo.reap_dead_jobs(session, tenant_id, request.app.state.training_processes.alive):
        session.commit()


@router.get("/models", response_model=list[ModelOut], responses={401: {"model": Problem}})
def list_all(request: Request, tenant: AdminTenant, session: SessionDep) -> list[ModelOut]:
    """The tenant's training jobs and models, newest first."""
    _reaped(request, tenant.id, session)
    return [_out(job) for job in repo.list_models(session, tenant.id)]


@router.get("/models/{ref}", response_model=ModelDetail, responses={401: {"model": Problem}, 404: {"model": Problem}})
def show(ref: ModelRef, request: Request, tenant: AdminTenant, session: SessionDep) -> ModelDetail:
    """One job (by job id) or the newest ready model with a key, with its full model card."""
    _reaped(request, tenant.id, session)
    job = repo.get_model(session, tenant.id, ref)
    if job is None:
        raise HTTPException(404, f"no training job or model {ref!r}")
    return _out(job, ModelDetail)
