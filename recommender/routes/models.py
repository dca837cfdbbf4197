"""Catalog-adapted models for a tenant's admin key: start a training job, list jobs, read one with its card."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from db import deployments, retirement
from db import trained_models as repo
from db.deployments import DeploymentError
from db.models import Tenant
from db.vector_index import INDEX_KINDS
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


# --- deployments: re-embed the catalog with a ready model, activate it, roll back ---


class DeployIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index_kind: Literal[INDEX_KINDS] = Field(
        "halfvec",
        description="halfvec HNSW; binary (Hamming IVFFlat over the sign bits, re-ranked on the full vectors); "
        "codes (the head's learned binary codes, re-ranked; a head trained with bits only)",
    )


class DeploymentOut(BaseModel):
    model_key: str
    status: Literal["embedding", "ready", "failed", "retiring"]
    phase: str = Field(
        description="scan -> sweep -> index -> done; a ready tower goes through repair (what ingest could not write)"
    )
    progress: float = Field(description="0..1")
    items_done: int = Field(description="Source vectors read so far")
    items_total: int = Field(description="Source vectors when the deployment started")
    items_written: int = Field(description="Vectors of this model written by the re-embed (ingest writes the rest)")
    items_failed: int = Field(
        description="A fine-tuned tower's items whose image could not be fetched again or had changed: they have "
        "no vector of this model (the final sweep tried them once more)"
    )
    from_images: bool = Field(description="A fine-tuned tower, re-embedded from the re-fetched images")
    index_kind: str
    reason: str | None = Field(description="Why it failed (failed only)")
    created_at: datetime
    ready_at: datetime | None


class ServingOut(BaseModel):
    active_model: str = Field(description="What the plain `visual` arm serves")
    previous_model: str | None = Field(description="Where a rollback goes")
    pretrained_model: str = Field(description="The deployed embedder's key: always servable as `visual@<key>`")
    deployments: list[DeploymentOut]


_DEPLOY_STATUS = {
    "unknown_model": 404,
    "not_deployed": 404,
    "not_ready": 409,
    "detector": 409,
    "backbone_mismatch": 409,
    "no_previous": 409,
    "in_use": 409,
    "retiring": 409,
    "artefact_missing": 409,
    "bad_index_kind": 422,
}


def _deployment_error(exc: DeploymentError, route: str) -> HTTPException:
    metrics.INVALID_REQUESTS.labels(route, exc.code).inc()
    return HTTPException(_DEPLOY_STATUS.get(exc.code, 409), str(exc))


def _dep_out(dep) -> DeploymentOut:
    return DeploymentOut(
        model_key=dep.model_key,
        status=dep.status,
        phase=dep.phase,
        progress=deployments.progress(dep),
        items_done=dep.items_done,
        items_total=dep.items_total,
        items_written=dep.items_written,
        items_failed=dep.items_failed,
        from_images=dep.needs_images,
        index_kind=dep.index_kind,
        reason=dep.reason,
        created_at=dep.created_at,
        ready_at=dep.ready_at,
    )


def _serving(session, tenant_id: str, embedder_key: str) -> ServingOut:
    tenant = session.get(Tenant, tenant_id)
    return ServingOut(
        active_model=tenant.active_model or embedder_key,
        previous_model=tenant.previous_model,
        pretrained_model=embedder_key,
        deployments=[_dep_out(d) for d in deployments.list_deployments(session, tenant_id)],
    )


@router.post(
    "/models/{ref}/deploy",
    status_code=202,
    response_model=DeploymentOut | ServingOut,
    responses={
        200: {"model": DeploymentOut, "description": "Already deploying or deployed (unchanged)"},
        401: {"model": Problem},
        404: {"model": Problem},
        409: {"model": Problem, "description": "Not ready, a detector, or a head of another backbone"},
        422: {"model": Problem},
    },
)
def deploy(ref: ModelRef, request: Request, tenant: AdminTenant, session: SessionDep, body: DeployIn | None = None):
    """Re-embed the tenant's catalog with a ready model in the background (workers run it); poll /v1/deployments."""
    embedder_key = request.app.state.embedder.model_key
    try:
        dep, started = deployments.deploy_trained(
            session, tenant.id, ref, embedder_key=embedder_key, index_kind=(body or DeployIn()).index_kind
        )
    except DeploymentError as exc:
        raise _deployment_error(exc, "/v1/models/{ref}/deploy") from None
    session.commit()
    if dep is None:  # the pretrained model serves already
        return JSONResponse(_serving(session, tenant.id, embedder_key).model_dump(mode="json"), status_code=200)
    body_out = _dep_out(dep).model_dump(mode="json")
    return JSONResponse(body_out, status_code=202 if started else 200)


@router.post(
    "/models/{ref}/activate",
    response_model=ServingOut,
    responses={401: {"model": Problem}, 404: {"model": Problem}, 409: {"model": Problem}},
)
def activate(ref: ModelRef, request: Request, tenant: AdminTenant, session: SessionDep) -> ServingOut:
    """Serve this ready model on the plain `visual` arm (within the API's lookup cache TTL); the old one is kept."""
    embedder_key = request.app.state.embedder.model_key
    job = repo.get_model(session, tenant.id, ref)
    key = job.model_key if job is not None and job.model_key else ref
    try:
        deployments.activate(session, tenant.id, key, embedder_key=embedder_key)
    except DeploymentError as exc:
        raise _deployment_error(exc, "/v1/models/{ref}/activate") from None
    session.commit()
    return _serving(session, tenant.id, embedder_key)


@router.post(
    "/deployments/rollback", response_model=ServingOut, responses={401: {"model": Problem}, 409: {"model": Problem}}
)
def rollback(request: Request, tenant: AdminTenant, session: SessionDep) -> ServingOut:
    """Point the `visual` arm back at the previous model at once (its vectors and index are still there)."""
    embedder_key = request.app.state.embedder.model_key
    try:
        deployments.rollback(session, tenant.id, embedder_key=embedder_key)
    except DeploymentError as exc:
        raise _deployment_error(exc, "/v1/deployments/rollback") from None
    session.commit()
    return _serving(session, tenant.id, embedder_key)


@router.post(
    "/models/{ref}/retire",
    status_code=202,
    response_model=DeploymentOut,
    responses={401: {"model": Problem}, 404: {"model": Problem}, 409: {"model": Problem}},
)
def retire(ref: ModelRef, tenant: AdminTenant, session: SessionDep) -> JSONResponse:
    """Retire a deployed model: it stops serving and being written at once; the workers then delete its vectors
    and index. 409 while it is the active model or an arm of a draft or running experiment."""
    job = repo.get_model(session, tenant.id, ref)
    key = job.model_key if job is not None and job.model_key else ref
    try:
        dep = retirement.retire(session, tenant.id, key)
    except DeploymentError as exc:
        raise _deployment_error(exc, "/v1/models/{ref}/retire") from None
    session.commit()
    return JSONResponse(_dep_out(dep).model_dump(mode="json"), status_code=202)


@router.get("/deployments", response_model=ServingOut, responses={401: {"model": Problem}})
def serving_state(request: Request, tenant: AdminTenant, session: SessionDep) -> ServingOut:
    """The active model, the rollback target and every deployment with its re-embed progress."""
    return _serving(session, tenant.id, request.app.state.embedder.model_key)
