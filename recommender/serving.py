"""One recommendation: find the placement's running experiment, assign the user (sticky), run the arm."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.orm import Session

from db import experiments as exp_repo
from db.deployments import ServableModel, get_deployment, progress, servable_models
from db.models import Tenant
from experiments.assignment import assign
from experiments.definition import ExperimentDefinition
from recommender import metrics
from recommender.arms import Arm, ArmRequest, ArmResult, VisualArm, split_arm
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
    models: TTLCache | None = None,
) -> Served | None:
    """Recommendations for one product view, or None if the product is unknown to this tenant."""
    experiment, arm_name = assigned_arm(session, tenant, user_id, placement, experiments)
    arm, unavailable = pick_arm(session, arms, tenant, arm_name, models)
    request = ArmRequest(tenant.id, product_id, limit, same_category)
    result = arm.recommend(session, request)
    session.commit()  # the sticky assignment
    if result is None:
        return None
    if unavailable is not None:  # the arm's model cannot serve (not deployed, or not ready): the baseline answers
        result = ArmResult(result.arm, result.items, fallback=unavailable, strategy=result.strategy)
    count(arm_name, result)
    return Served(uuid.uuid4().hex, experiment, arm_name, result)


def pick_arm(
    session: Session, arms: dict[str, Arm], tenant: Tenant, arm_name: str, models: TTLCache | None = None
) -> tuple[Arm, str | None]:
    """The arm instance for an assigned arm name, and why the baseline stands in (None: it does not).

    `visual` serves the tenant's active model (the deployed embedder when none is set), `visual@<key>`
    that model; a model must be the deployed embedder or have a `ready` deployment, else the baseline
    answers with the fallback reason `model_not_ready`. Unknown names get the baseline, as before.
    """
    baseline, visual = arms["baseline"], arms.get("visual")
    if not isinstance(visual, VisualArm) or not arm_name.startswith("visual"):
        return arms.get(arm_name) or baseline, None
    base, _, key = arm_name.partition("@")
    if base != "visual":
        return baseline, None
    key = key or tenant.active_model or visual.model_key
    if key == visual.model_key:
        return visual, None
    model = ready_models(session, tenant.id, models).get(key)
    if model is None:
        return baseline, "model_not_ready"
    return visual.for_model(model.key, model.dim, model.index_kind), None


def ready_models(session: Session, tenant_id: str, cache: TTLCache | None = None) -> dict[str, ServableModel]:
    """The tenant's ready trained models by key; with `cache`, read at most once per TTL per tenant."""

    def load() -> dict[str, ServableModel]:
        return servable_models(session, tenant_id)

    return load() if cache is None else cache.get_or_load(("ready_models", tenant_id), load)


def count(assigned: str, result: ArmResult) -> None:
    """Count one response per assigned arm, answering arm and model key; a fallback also by its reason."""
    # Label values are bounded: arm names come from experiments, model keys from the tenants' deployed models.
    metrics.RECOMMENDATIONS.labels(assigned, result.arm, result.model or "none").inc()
    if result.fallback is not None:
        metrics.FALLBACKS.labels(assigned, result.fallback).inc()


def check_arm_models(session: Session, tenant_id: str, arm_names: list[str], *, embedder_key: str) -> None:
    """ValueError naming the first arm that cannot serve: a malformed name, or a model not ready for the tenant."""
    for name in arm_names:
        _, key = split_arm(name)
        if key is None or key == embedder_key:
            continue
        dep = get_deployment(session, tenant_id, key)  # tenant-scoped: another tenant's model is unknown here
        if dep is None:
            raise ValueError(
                f"arm {name!r}: model {key!r} is not deployed for this tenant "
                f"(deploy a ready model with POST /v1/models/{{key}}/deploy; the pretrained one is {embedder_key!r})"
            )
        if dep.status == "embedding":
            raise ValueError(f"arm {name!r}: model {key!r} is still re-embedding ({progress(dep):.0%}), try later")
        if dep.status == "retiring":
            raise ValueError(f"arm {name!r}: model {key!r} is being retired for this tenant")
        if dep.status != "ready":
            raise ValueError(f"arm {name!r}: model {key!r} failed to deploy: {dep.reason}")
