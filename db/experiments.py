"""Experiments and sticky assignments (repository functions: take a session, never commit)."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import Row, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from db.models import Experiment
from experiments.definition import ExperimentDefinition, parse_guardrails


class ExperimentError(ValueError):
    """A request that the experiment's state does not allow; the message says why."""


# What an ExperimentDefinition is built from. Selected as columns (not the ORM entity) so that the
# reader works on a Connection as well as a Session: the loader and snapshots run on connections.
_DEFINITION_COLUMNS = (
    Experiment.key,
    Experiment.arms,
    Experiment.salt,
    Experiment.traffic_fraction,
    Experiment.hash_version,
    Experiment.primary_metric,
    Experiment.started_at,
    Experiment.stopped_at,
    Experiment.guardrails,
)


def definition_of(exp: Experiment | Row) -> ExperimentDefinition:
    """The pure definition assignment and analysis work with, from an `Experiment` or a row of its columns."""
    return ExperimentDefinition.from_row(
        exp.key,
        exp.arms,
        salt=exp.salt or "",
        traffic_fraction=exp.traffic_fraction,
        hash_version=exp.hash_version,
        primary_metric=exp.primary_metric,
        started_at=exp.started_at,
        stopped_at=exp.stopped_at,
        # not strict: a row stored before guardrails were validated must still serve and report
        guardrails=parse_guardrails(exp.guardrails, strict=False),
    )


def load_definition(conn: Connection | Session, tenant_id: str, key: str) -> ExperimentDefinition | None:
    """The experiment's definition, or None if it does not exist; ValueError if the stored one is invalid."""
    row = conn.execute(
        select(*_DEFINITION_COLUMNS).where(Experiment.tenant_id == tenant_id, Experiment.key == key)
    ).first()
    return None if row is None else definition_of(row)


def load_planned_sample_size(conn: Connection | Session, tenant_id: str, key: str) -> int | None:
    """The experiment's planned total sample size (the sequential tuning parameter), if set."""
    return conn.execute(
        select(Experiment.planned_sample_size).where(Experiment.tenant_id == tenant_id, Experiment.key == key)
    ).scalar()


def create_experiment(
    session: Session,
    tenant_id: str,
    key: str,
    *,
    arms: list[dict],
    placement: str = "similar",
    traffic_fraction: float = 1.0,
    primary_metric: str = "ctr",
    guardrails: list | None = None,
    planned_sample_size: int | None = None,
    allowed_arms: Iterable[str] | None = None,
    salt: str | None = None,
) -> Experiment:
    """Add a draft experiment; invalid arms/weights/metrics raise ValueError before anything is stored.

    `salt` seeds the assignment hash: random by default (a new experiment reshuffles users); a fixed one
    reproduces an assignment, e.g. a simulation's.

    Guardrails are metric names or {"metric", "margin"} objects, stored as the latter (the margin made explicit).
    """
    if allowed_arms is not None:
        unknown = [a.get("name") for a in arms if a.get("name") not in set(allowed_arms)]
        if unknown:
            raise ExperimentError(f"unknown arm(s) {unknown}; available: {sorted(allowed_arms)}")
    if salt is not None:
        # Two experiments with one salt would put every user in the same bucket of both: correlated arms.
        taken = session.scalar(select(Experiment.key).where(Experiment.tenant_id == tenant_id, Experiment.salt == salt))
        if taken is not None:
            raise ExperimentError(f"salt {salt!r} already exists on experiment {taken!r}: each needs its own")
    exp = Experiment(
        tenant_id=tenant_id,
        key=key,
        placement=placement,
        status="draft",
        arms=arms,
        traffic_fraction=traffic_fraction,
        salt=salt or secrets.token_hex(8),
        hash_version=1,
        primary_metric=primary_metric,
        guardrails=[g.to_dict() for g in parse_guardrails(guardrails)],
        planned_sample_size=planned_sample_size,
    )
    definition_of(exp)  # validates weights, traffic, metric
    if get_experiment(session, tenant_id, key) is not None:
        raise ExperimentError(f"experiment {key!r} already exists")
    session.add(exp)
    session.flush()
    return exp


def get_experiment(session: Session, tenant_id: str, key: str) -> Experiment | None:
    return session.scalar(select(Experiment).where(Experiment.tenant_id == tenant_id, Experiment.key == key))


def list_experiments(session: Session, tenant_id: str) -> list[Experiment]:
    return list(
        session.scalars(select(Experiment).where(Experiment.tenant_id == tenant_id).order_by(Experiment.created_at))
    )


def start_experiment(session: Session, tenant_id: str, key: str) -> Experiment:
    """draft -> running; one running experiment per placement."""
    exp = _require(session, tenant_id, key)
    if exp.status != "draft":
        raise ExperimentError(f"experiment {key!r} is {exp.status}; only a draft can start")
    clash = running_experiment(session, tenant_id, exp.placement)
    if clash is not None:
        raise ExperimentError(f"experiment {clash.key!r} already runs on placement {exp.placement!r}")
    exp.status, exp.started_at = "running", datetime.now(UTC)
    session.flush()
    return exp


def stop_experiment(session: Session, tenant_id: str, key: str) -> Experiment:
    exp = _require(session, tenant_id, key)
    if exp.status != "running":
        raise ExperimentError(f"experiment {key!r} is {exp.status}; only a running one can stop")
    exp.status, exp.stopped_at = "stopped", datetime.now(UTC)
    session.flush()
    return exp


def running_experiment(session: Session, tenant_id: str, placement: str) -> Experiment | None:
    return session.scalar(
        select(Experiment).where(
            Experiment.tenant_id == tenant_id, Experiment.placement == placement, Experiment.status == "running"
        )
    )


def stored_arm(session: Session, experiment_id: int, user_id: str) -> str | None:
    """The user's first assignment, if any."""
    return session.scalar(
        text("SELECT arm FROM assignments WHERE experiment_id = :e AND user_id = :u"),
        {"e": experiment_id, "u": user_id},
    )


def sticky_arm(session: Session, *, experiment_id: int, tenant_id: str, user_id: str, arm: str) -> str:
    """Store `arm` as the user's first assignment unless one exists; returns the stored arm."""
    return session.scalar(
        text("""
        WITH ins AS (
            INSERT INTO assignments (experiment_id, user_id, tenant_id, arm) VALUES (:e, :u, :t, :a)
            ON CONFLICT (experiment_id, user_id) DO NOTHING RETURNING arm
        )
        SELECT arm FROM ins UNION ALL
        SELECT arm FROM assignments WHERE experiment_id = :e AND user_id = :u
        LIMIT 1
    """),
        {"e": experiment_id, "u": user_id, "t": tenant_id, "a": arm},
    )


def _require(session: Session, tenant_id: str, key: str) -> Experiment:
    exp = get_experiment(session, tenant_id, key)
    if exp is None:
        raise ExperimentError(f"no experiment {key!r} for tenant {tenant_id!r}")
    return exp
