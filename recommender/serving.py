"""One recommendation: find the placement's running experiment, assign the user (sticky), run the arm."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.orm import Session

from db import experiments as exp_repo
from db.models import Tenant
from experiments.assignment import assign
from experiments.definition import ExperimentDefinition
from recommender import metrics
from recommender.arms import Arm, ArmRequest, ArmResult
from recommender.ttl_cache import TTLCache


@dataclass(frozen=True)
class Served:
    request_id: str
    experiment: str | None  # None: no running experiment, or the user is outside its traffic
    arm: str  # the assigned arm (what the analysis counts), even if it fell back
    result: ArmResult


@dataclass(frozen=True)
class RunningExperiment:
    """What assignment needs of a running experiment (immutable, so processes can cache it)."""

    id: int
    key: str
    definition: ExperimentDefinition


def running_experiment(
    session: Session, tenant_id: str, placement: str, cache: TTLCache | None = None
) -> RunningExperiment | None:
    """The placement's running experiment; with `cache`, read at most once per TTL per (tenant, placement)."""

    def load() -> RunningExperiment | None:
        exp = exp_repo.running_experiment(session, tenant_id, placement)
        return None if exp is None else RunningExperiment(exp.id, exp.key, exp_repo.definition_of(exp))

    return load() if cache is None else cache.get_or_load((tenant_id, placement), load)


def assigned_arm(
    session: Session, tenant: Tenant, user_id: str, placement: str, experiments: TTLCache | None = None
) -> tuple[str | None, str]:
    """(experiment key or None, arm). The first in-experiment assignment is stored and wins later."""
    exp = running_experiment(session, tenant.id, placement, experiments)
    if exp is None:
        return None, tenant.default_arm
    definition = exp.definition
    fresh = assign(definition, user_id, tenant.default_arm)
    if fresh.in_experiment:
        arm = exp_repo.sticky_arm(session, experiment_id=exp.id, tenant_id=tenant.id, user_id=user_id, arm=fresh.arm)
    else:  # outside the traffic now, but an earlier assignment still holds
        arm = exp_repo.stored_arm(session, exp.id, user_id)
        if arm is None:
            return None, tenant.default_arm
    if arm not in definition.arm_names:  # the arm was removed from the experiment
        return None, tenant.default_arm
    return exp.key, arm


def serve(
    session: Session,
    arms: dict[str, Arm],
    tenant: Tenant,
    *,
    user_id: str,
    product_id: str,
    placement: str,
    limit: int,
    same_category: bool,
    experiments: TTLCache | None = None,
) -> Served | None:
    """Recommendations for one product view, or None if the product is unknown to this tenant."""
    experiment, arm_name = assigned_arm(session, tenant, user_id, placement, experiments)
    arm = arms.get(arm_name) or arms["baseline"]
    result = arm.recommend(session, ArmRequest(tenant.id, product_id, limit, same_category))
    session.commit()  # the sticky assignment
    if result is None:
        return None
    count(arm_name, arms.get(result.arm) or arm, result)
    return Served(uuid.uuid4().hex, experiment, arm_name, result)


def count(assigned: str, answered_by: Arm, result: ArmResult) -> None:
    """Count one response per assigned arm, answering arm and model key; a fallback also by its reason."""
    # Label values are bounded: arm names come from the registry, model keys from the deployed embedder.
    model = getattr(answered_by, "model_key", None) or "none"
    metrics.RECOMMENDATIONS.labels(assigned, result.arm, model).inc()
    if result.fallback is not None:
        metrics.FALLBACKS.labels(assigned, result.fallback).inc()
