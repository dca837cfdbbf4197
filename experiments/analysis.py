"""What an analysis is asked: attribution, pre-period and report options, and the days it covers (pure).

`db.experiment_stats.analyze` runs one from the database; `experiments.snapshots.snapshot_report`
runs one on stored statistics. Both build the report the same way, so every surface (CLI, API,
dashboards) shows the same numbers for the same options.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from experiments.capping import DEFAULT_CAP_PERCENTILE
from experiments.definition import ExperimentDefinition
from experiments.report import DEFAULT_METRICS, build_report
from experiments.sequential import DEFAULT_TUNING_N
from experiments.stats import ExperimentStats

DEFAULT_PRE_PERIOD_DAYS = 14


@dataclass(frozen=True)
class Attribution:
    """Which clicks and purchases count for an exposed user's arm.

    - mode "request": the click/purchase carries the request_id of one of that user's exposures in
      this experiment (exact, needs storefronts to echo request ids);
    - mode "window": any click/purchase of the user within `window_hours` after their first
      exposure in the experiment (robust when purchases lose the request id).
    """

    mode: str = "request"  # "request" | "window"
    window_hours: float = 24.0

    def __post_init__(self) -> None:
        if self.mode not in ("request", "window"):
            raise ValueError(f"attribution mode must be 'request' or 'window', got {self.mode!r}")
        if not (math.isfinite(self.window_hours) and self.window_hours > 0):
            raise ValueError(f"attribution window_hours must be > 0, got {self.window_hours!r}")


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
    # revenue per user is capped at this percentile of all users' revenue (zeros included); None = uncapped
    cap_percentile: float | None = DEFAULT_CAP_PERCENTILE


def days_elapsed(definition: ExperimentDefinition | None, now: datetime | None = None) -> float | None:
    """Days between start and stop (or now); None when the start is unknown."""
    if definition is None or definition.started_at is None:
        return None
    end = definition.stopped_at or now or datetime.now(UTC)
    return max((end - definition.started_at).total_seconds() / 86400.0, 0.0) or None


def report_for(
    definition: ExperimentDefinition | None,
    stats: ExperimentStats,
    options: ReportOptions,
    *,
    planned_sample_size: int | None,
    as_of: datetime | None,
    tenant_id: str | None,
) -> dict[str, Any]:
    """The report for these options: what `analyze` (live) and `snapshot_report` (stored) both return.

    The sequential tuning n is the option's, else the experiment's planned sample size, else the default;
    days elapsed are counted at `as_of`.
    """
    tuning_n = options.tuning_n or (planned_sample_size if definition is not None else 0) or DEFAULT_TUNING_N
    return build_report(
        definition,
        stats,
        alpha=options.alpha,
        correction=options.correction,
        metrics=options.metrics,
        sequential=options.sequential,
        tuning_n=tuning_n,
        cuped=options.cuped,
        target_relative_mde=options.target_relative_mde,
        days_elapsed=days_elapsed(definition, as_of),
        tenant_id=tenant_id,
        cap_revenue=options.cap_percentile is not None,
    )
