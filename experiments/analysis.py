"""One call from the database to a report: what the CLI, the API and the dashboards use.

It composes the loader (the only I/O) with the pure report builder, so every surface
shows the same numbers for the same options.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from experiments.definition import ExperimentDefinition
from experiments.loader import (
    DEFAULT_PRE_PERIOD_DAYS,
    Attribution,
    load_experiment_stats,
    load_planned_sample_size,
)
from experiments.report import DEFAULT_METRICS, build_report
from experiments.sequential import DEFAULT_TUNING_N


@dataclass(frozen=True)
class ReportOptions:
    """Every knob of an analysis, with the defaults the CLI and API use."""

    attribution: Attribution = Attribution()
    alpha: float = 0.05
    correction: str = "holm"
    metrics: tuple[str, ...] = DEFAULT_METRICS
    sequential: bool = False
    tuning_n: float = 0.0  # 0 = the experiment's planned_sample_size, else 5000
    cuped: bool = True
    pre_period_days: int = DEFAULT_PRE_PERIOD_DAYS
    target_relative_mde: float = 0.05
    daily: bool = False  # also load the per-day cumulative series (slower)


def days_elapsed(definition: ExperimentDefinition | None, now: datetime | None = None) -> float | None:
    """Days between start and stop (or now); None when the start is unknown."""
    if definition is None or definition.started_at is None:
        return None
    end = definition.stopped_at or now or datetime.now(timezone.utc)
    return max((end - definition.started_at).total_seconds() / 86400.0, 0.0) or None


def analyze(conn: Any, tenant_id: str, key: str, options: ReportOptions = ReportOptions(),
            now: datetime | None = None) -> dict[str, Any] | None:
    """The report of experiment `key`, or None when it neither exists nor has exposures.

    Raises ValueError for an invalid stored definition or invalid options (caller shows it).
    """
    definition, stats = load_experiment_stats(conn, tenant_id, key, attribution=options.attribution,
                                              daily=options.daily, pre_period_days=options.pre_period_days)
    if definition is None and not stats.arms:
        return None
    tuning_n = options.tuning_n
    if not tuning_n and definition is not None:
        tuning_n = load_planned_sample_size(conn, tenant_id, key) or 0
    return build_report(definition, stats, alpha=options.alpha, correction=options.correction,
                        metrics=options.metrics, sequential=options.sequential,
                        tuning_n=tuning_n or DEFAULT_TUNING_N, cuped=options.cuped,
                        target_relative_mde=options.target_relative_mde,
                        days_elapsed=days_elapsed(definition, now), tenant_id=tenant_id)
