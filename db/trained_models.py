"""The trained-model registry: training jobs per tenant, their outcome, and the catalog rows a trainer reads.

Repository functions: they take a session, never commit, and filter every query by tenant (only the
operator CLI passes `tenant_id=None` to see every tenant). A job goes `training` -> `ready` (model key,
artefact path and card set together) or `training` -> `failed` (a reason, nothing else), never back.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.models import Item, Product, ProductImage, TrainedModel

STATUSES = ("training", "ready", "failed")


class TrainingJobError(ValueError):
    """A change the job's state does not allow (finishing a failed job, an unknown job); the message says why."""


class JobAlreadyRunning(TrainingJobError):
    """The tenant already has a job training (one at a time); `job_id` names it."""

    def __init__(self, tenant_id: str, job_id: str):
        super().__init__(f"tenant {tenant_id!r} already has a training job running: {job_id}")
        self.job_id = job_id


@dataclass(frozen=True)
class CatalogRow:
    """One stored vector of a tenant's product, with what a trainer labels and splits it by."""

    product: str  # the tenant's external product id
    category: str | None
    title: str
    image_id: int
    image_url: str
    vector: np.ndarray  # float32
    item_id: int = 0  # the stored item (its pixels are image_url cut at box)
    box: tuple[float, float, float, float] | None = None  # x0, y0, x1, y1 in pixels of the image
    content_hash: str | None = None  # the image's hash when it was indexed


def _scoped(stmt, tenant_id: str | None):
    return stmt if tenant_id is None else stmt.where(TrainedModel.tenant_id == tenant_id)


def running_job(session: Session, tenant_id: str) -> TrainedModel | None:
    """The tenant's job still `training`, if any."""
    return session.scalar(
        select(TrainedModel).where(TrainedModel.tenant_id == tenant_id, TrainedModel.status == "training")
    )


def start_job(
    session: Session, tenant_id: str, *, method: str, finetune: bool, params: dict, log_path: str | None = None
) -> TrainedModel:
    """Register a new job in status `training`; JobAlreadyRunning if the tenant has one training."""
    running = running_job(session, tenant_id)
    if running is not None:
        raise JobAlreadyRunning(tenant_id, running.job_id)
    job = TrainedModel(
        tenant_id=tenant_id,
        job_id=uuid.uuid4().hex,
        method=method,
        finetune=finetune,
        params=params,
        status="training",
        log_path=log_path,
    )
    # A savepoint: losing the race to a concurrent start (the partial unique index) leaves the
    # caller's transaction usable.
    try:
        with session.begin_nested():
            session.add(job)
    except IntegrityError:
        running = running_job(session, tenant_id)
        raise JobAlreadyRunning(tenant_id, running.job_id if running else "(just finished)") from None
    return job


def _job(session: Session, tenant_id: str, job_id: str, *, lock: bool = False) -> TrainedModel:
    stmt = select(TrainedModel).where(TrainedModel.tenant_id == tenant_id, TrainedModel.job_id == job_id)
    job = session.scalar(stmt.with_for_update() if lock else stmt)
    if job is None:
        raise TrainingJobError(f"no training job {job_id!r} for tenant {tenant_id!r}")
    return job


def set_pid(
    session: Session, tenant_id: str, job_id: str, pid: int, *, host: str | None = None, log_path: str | None = None
) -> TrainedModel:
    """Record the training process (`host` defaults to this machine's name: pids mean nothing elsewhere)."""
    job = _job(session, tenant_id, job_id)
    job.pid, job.host, job.updated_at = pid, host or socket.gethostname(), datetime.now(UTC)
    if log_path is not None:
        job.log_path = log_path
    session.flush()
    return job


def _close(session: Session, tenant_id: str, job_id: str, status: str, **fields) -> TrainedModel:
    job = _job(session, tenant_id, job_id, lock=True)  # the trainer and a reaper may race to close it
    if job.status != "training":
        raise TrainingJobError(f"job {job_id} is {job.status}, not training: it cannot become {status}")
    for name, value in fields.items():
        setattr(job, name, value)
    job.status = status
    job.finished_at = job.updated_at = datetime.now(UTC)
    session.flush()
    return job


def finish_job(
    session: Session, tenant_id: str, job_id: str, *, model_key: str, artefact_path: str, card: dict
) -> TrainedModel:
    """Mark a training job `ready` with its model; TrainingJobError unless it is `training`."""
    if not model_key or not artefact_path:
        raise TrainingJobError("a ready model needs its model key and artefact path")
    return _close(session, tenant_id, job_id, "ready", model_key=model_key, artefact_path=artefact_path, card=card)


def fail_job(session: Session, tenant_id: str, job_id: str, reason: str) -> TrainedModel:
    """Mark a training job `failed` with the reason; no key or artefact is registered."""
    return _close(session, tenant_id, job_id, "failed", reason=reason, model_key=None, artefact_path=None)


def list_models(session: Session, tenant_id: str | None = None) -> list[TrainedModel]:
    """The tenant's jobs and models, newest first (tenant_id None: every tenant's, for the operator CLI)."""
    stmt = select(TrainedModel).order_by(TrainedModel.created_at.desc(), TrainedModel.id.desc())
    return list(session.scalars(_scoped(stmt, tenant_id)))


def get_model(session: Session, tenant_id: str | None, key_or_job_id: str) -> TrainedModel | None:
    """A job by its id, else the newest ready model with that key (tenant_id None: any tenant, operator CLI)."""
    job = session.scalar(_scoped(select(TrainedModel).where(TrainedModel.job_id == key_or_job_id), tenant_id))
    if job is not None:
        return job
    stmt = (
        select(TrainedModel)
        .where(TrainedModel.model_key == key_or_job_id, TrainedModel.status == "ready")
        .order_by(TrainedModel.finished_at.desc(), TrainedModel.id.desc())
        .limit(1)
    )
    return session.scalar(_scoped(stmt, tenant_id))


def reap_dead_jobs(
    session: Session, tenant_id: str | None, is_alive: Callable[[int], bool], *, host: str | None = None
) -> int:
    """Mark failed the jobs still `training` whose process on this host is gone; returns how many.

    Only jobs started on `host` (default: this machine) are checked, since a pid names a process on
    one host only; a job with no pid recorded yet is left alone (its starter is still between steps).
    """
    host = host or socket.gethostname()
    stmt = select(TrainedModel.job_id, TrainedModel.tenant_id, TrainedModel.pid, TrainedModel.log_path).where(
        TrainedModel.status == "training", TrainedModel.pid.is_not(None), TrainedModel.host == host
    )
    reaped = 0
    for job_id, tenant, pid, log_path in session.execute(_scoped(stmt, tenant_id)).all():
        if is_alive(pid):
            continue
        try:
            fail_job(session, tenant, job_id, f"the training process exited without a result (log: {log_path})")
        except TrainingJobError:  # it finished or failed on its own meanwhile
            continue
        reaped += 1
    return reaped


@dataclass(frozen=True)
class TrainingDataSummary:
    """How much indexed data a tenant has for one model key: products with vectors, per category."""

    products: int
    categories: dict[str | None, int]  # category (None: none given) -> products with vectors


def training_data_summary(
    session: Session, tenant_id: str, model_key: str, *, kinds: Iterable[str] = ("whole",)
) -> TrainingDataSummary:
    """Count the tenant's live products that have stored vectors of `model_key`, per category."""
    has_vectors = (
        select(Item.id)
        .where(
            Item.tenant_id == tenant_id,
            Item.product_id == Product.id,
            Item.model == model_key,
            Item.kind.in_(list(kinds)),
        )
        .exists()
    )
    rows = session.execute(
        select(Product.category, func.count())
        .where(Product.tenant_id == tenant_id, Product.deleted.is_(False), has_vectors)
        .group_by(Product.category)
    ).all()
    categories: dict[str | None, int] = dict(rows)
    return TrainingDataSummary(products=sum(categories.values()), categories=categories)


def catalog_training_rows(
    session: Session, tenant_id: str, model_key: str, *, kinds: Iterable[str] = ("whole",)
) -> list[CatalogRow]:
    """The stored `model_key` vectors of the tenant's live products, one per item of `kinds`.

    Ordered by product, then image position, then item, so the same catalog gives the same rows (and,
    with the same seed, the same split). `model_key` is usually the pretrained backbone's: a new head
    trains from these features without running the CNN again.
    """
    rows = session.execute(
        select(
            Product.external_id,
            Product.category,
            Product.title,
            ProductImage.id,
            ProductImage.url,
            Item.embedding,
            Item.id,
            Item.box,
            ProductImage.content_hash,
        )
        .join(ProductImage, ProductImage.id == Item.image_id)
        .join(Product, Product.id == Item.product_id)
        .where(
            Item.tenant_id == tenant_id,
            Item.model == model_key,
            Item.kind.in_(list(kinds)),
            Product.tenant_id == tenant_id,
            Product.deleted.is_(False),
        )
        .order_by(Product.external_id, ProductImage.position, ProductImage.id, Item.id)
    ).all()
    return [
        CatalogRow(
            product=external_id,
            category=category,
            title=title,
            image_id=image_id,
            image_url=url,
            vector=np.asarray(vector, dtype=np.float32),
            item_id=item_id,
            box=tuple(box),
            content_hash=digest,
        )
        for external_id, category, title, image_id, url, vector, item_id, box, digest in rows
    ]
