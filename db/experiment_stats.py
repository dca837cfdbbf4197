"""An experiment's sufficient statistics loaded from Postgres, and the one place that picks rollup or raw.

The unit is the user: a user's arm is the arm of their exposures in the experiment; users exposed to
more than one arm are excluded and counted (`ExperimentStats.multi_arm_users`), as GrowthBook does
with "multiple exposures". Which clicks and purchases count is explicit
(`experiments.analysis.Attribution`); the queries are in `db/experiment_sql.py`.

Request attribution reads the rollup when it answers exactly, and the raw events otherwise: window
attribution, exposures outside [start, end), outcomes before start - 1 h, a request shared by two
experiments. `_choose_source` alone decides; both sources give the same numbers
(tests/experiments/test_rollup.py). Functions take a Connection or Session and never commit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text

from db.experiment_sql import (
    INEXACT,
    MIXED_SQL,
    MULTIPLE,
    daily_sql,
    rollup_daily_sql,
    rollup_inexact_sql,
    rollup_totals_sql,
    totals_sql,
)
from db.experiments import load_definition, load_planned_sample_size
from experiments.analysis import DEFAULT_PRE_PERIOD_DAYS, Attribution, ReportOptions, report_for
from experiments.capping import DEFAULT_CAP_PERCENTILE, Capping
from experiments.daily import cumulate_daily
from experiments.definition import ExperimentDefinition
from experiments.stats import ArmStats, DailyArmStats, ExperimentStats

log = logging.getLogger(__name__)

SOURCES = ("auto", "rollup", "raw")
# Hash aggregates over millions of (request, user) groups spill to disk with the 4 MB
# default (10M events: 5M groups, ~370 MB in memory); set for the current transaction
# only (set_config(..., is_local => true)). Lower it if many reports run at once.
DEFAULT_WORK_MEM = "1GB"


@dataclass(frozen=True)
class LoadedExperiment:
    """An experiment's definition and statistics, with the source that answered."""

    definition: ExperimentDefinition | None
    stats: ExperimentStats  # with .daily when asked for
    source: str  # "rollup" | "raw"


def _params(
    tenant_id: str,
    key: str,
    attribution: Attribution,
    start: datetime | None,
    end: datetime | None,
    pre_period_days: int,
    cap_percentile: float | None = DEFAULT_CAP_PERCENTILE,
) -> dict[str, Any]:
    if cap_percentile is not None:
        Capping(cap_percentile)  # ValueError unless in (0, 1]
    return {
        "tenant": tenant_id,
        "key": key,
        "start": start,
        "end": end,
        "window_s": float(attribution.window_hours) * 3600.0,
        "pre_days": int(pre_period_days),
        "multiple": MULTIPLE,
        "inexact": INEXACT,
        "cap_p": cap_percentile,
        "cap": None,  # the daily query's cap: the totals' (set by _load once they are known)
    }


def _check_source(source: str, attribution: Attribution) -> None:
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if source == "rollup" and attribution.mode != "request":
        raise ValueError("the rollup answers request attribution only")


def _tune(conn: Any, work_mem: str | None) -> None:
    if work_mem:
        conn.execute(text("SELECT set_config('work_mem', :wm, true)"), {"wm": work_mem})


def _arm_stats(key: str, rows: list, cap_percentile: float | None) -> ExperimentStats | None:
    """Per-arm totals rows -> ExperimentStats; None when the rollup's `INEXACT` row is among them."""
    multiple = 0
    arms = []
    cap = None
    for row in rows:
        if row["arm"] not in (INEXACT, MULTIPLE) and row["revenue_cap"] is not None:
            cap = float(row["revenue_cap"])
        if row["arm"] == INEXACT:
            return None
        if row["arm"] == MULTIPLE:
            multiple = int(row["users"])
        else:
            arms.append(ArmStats.from_mapping(row["arm"], dict(row)))
    return ExperimentStats(
        key=key,
        arms=tuple(sorted(arms, key=lambda a: a.arm)),
        multi_arm_users=multiple,
        revenue_cap=cap,
        revenue_cap_percentile=cap_percentile if cap is not None else None,
    )


def rollup_exact(
    conn: Any, tenant_id: str, key: str, start: datetime | None = None, end: datetime | None = None
) -> bool:
    """True when the rollup gives exactly the raw path's request attribution for [start, end)."""
    if conn.execute(text(MIXED_SQL), {"tenant": tenant_id}).scalar():
        return False
    return not conn.execute(
        text(rollup_inexact_sql()), {"tenant": tenant_id, "key": key, "start": start, "end": end}
    ).scalar()


def _choose_source(
    conn: Any, tenant_id: str, key: str, attribution: Attribution, source: str, params: dict[str, Any], *, totals: bool
) -> tuple[str, ExperimentStats | None]:
    """("rollup", its totals or None) when the rollup answers exactly, else ("raw", None): rollup or raw, decided once.

    With `totals` the exactness check rides in the rollup's totals query (one pass over the rollup,
    totals returned); without, `rollup_exact` checks it alone. `source` "auto" falls back to raw
    events; "rollup" raises ValueError instead; "raw" never reads the rollup.
    """
    if source == "raw" or attribution.mode != "request":
        return "raw", None
    if totals:
        stats = None
        if not conn.execute(text(MIXED_SQL), {"tenant": tenant_id}).scalar():
            stats = _arm_stats(key, conn.execute(text(rollup_totals_sql()), params).mappings().all(), params["cap_p"])
        if stats is not None:
            return "rollup", stats
    elif rollup_exact(conn, tenant_id, key, params["start"], params["end"]):
        return "rollup", None
    if source == "rollup":
        raise ValueError(f"the rollup cannot answer experiment {key!r} exactly for these bounds")
    log.info("experiment %s/%s: rollup not exact for these bounds, aggregating raw events", tenant_id, key)
    return "raw", None


def _daily_rows(conn: Any, rollup: bool, attribution: Attribution, params: dict[str, Any]) -> list:
    if not rollup:
        return conn.execute(text(daily_sql(attribution)), params).mappings().all()
    # Rollup rows arrive in time order, so the (user, day) primary key is uncorrelated with the
    # heap: walking it costs about three times a scan and a sort (docs/experiments.md). The planner
    # cannot see that; switch index scans off for this query.
    conn.execute(text("SELECT set_config('enable_indexscan', 'off', true)"))
    try:
        return conn.execute(text(rollup_daily_sql()), params).mappings().all()
    finally:
        conn.execute(text("SELECT set_config('enable_indexscan', 'on', true)"))


def _load(
    conn: Any,
    tenant_id: str,
    key: str,
    *,
    attribution: Attribution,
    start: datetime | None,
    end: datetime | None,
    pre_period_days: int,
    work_mem: str | None,
    source: str,
    totals: bool,
    daily: bool,
    cap_percentile: float | None = DEFAULT_CAP_PERCENTILE,
) -> tuple[str, ExperimentStats | None, tuple[DailyArmStats, ...]]:
    """(source used, totals if asked, daily series if asked): both read from the one source chosen.

    The daily series' capped revenue uses the totals' cap (the percentile over all users at the end), so its
    last day equals the table's capped revenue; with a cap percentile the totals are loaded for it.
    """
    _check_source(source, attribution)
    _tune(conn, work_mem)
    params = _params(tenant_id, key, attribution, start, end, pre_period_days, cap_percentile)
    need_totals = totals or (daily and cap_percentile is not None)
    used, stats = _choose_source(conn, tenant_id, key, attribution, source, params, totals=need_totals)
    if need_totals and stats is None:
        stats = _arm_stats(key, conn.execute(text(totals_sql(attribution)), params).mappings().all(), params["cap_p"])
    series: tuple[DailyArmStats, ...] = ()
    if daily:
        params["cap"] = stats.revenue_cap if stats is not None else None
        rows = _daily_rows(conn, used == "rollup", attribution, params)
        series = cumulate_daily([(r["arm"], r["day"], dict(r)) for r in rows])
    return used, stats, series


def load_arm_stats(
    conn: Any,
    tenant_id: str,
    key: str,
    *,
    attribution: Attribution = Attribution(),
    start: datetime | None = None,
    end: datetime | None = None,
    pre_period_days: int = DEFAULT_PRE_PERIOD_DAYS,
    work_mem: str | None = DEFAULT_WORK_MEM,
    source: str = "auto",
    cap_percentile: float | None = DEFAULT_CAP_PERCENTILE,
) -> ExperimentStats:
    """Per-arm sufficient statistics of exposures in [start, end) (None = unbounded).

    `conn` is a SQLAlchemy Connection or Session; the caller owns the transaction. `source`:
    "auto" reads the rollup when it is exact, else raw events; "rollup" raises ValueError when
    it is not exact; "raw" always aggregates raw events (the reference the rollup is tested against).
    `cap_percentile`: the capped revenue sums use this percentile of all users' revenue (None: no cap).
    """
    _, stats, _ = _load(
        conn,
        tenant_id,
        key,
        attribution=attribution,
        start=start,
        end=end,
        pre_period_days=pre_period_days,
        work_mem=work_mem,
        source=source,
        totals=True,
        daily=False,
        cap_percentile=cap_percentile,
    )
    return stats


def load_daily_stats(
    conn: Any,
    tenant_id: str,
    key: str,
    *,
    attribution: Attribution = Attribution(),
    start: datetime | None = None,
    end: datetime | None = None,
    pre_period_days: int = DEFAULT_PRE_PERIOD_DAYS,
    work_mem: str | None = DEFAULT_WORK_MEM,
    source: str = "auto",
    cap_percentile: float | None = DEFAULT_CAP_PERCENTILE,
) -> tuple[DailyArmStats, ...]:
    """Cumulative per-arm statistics at the end of each UTC day (what a daily peek saw).

    `source` as in `load_arm_stats`; "auto" checks exactness first (one more pass over the rollup).
    The capped revenue sums use the cap of `load_arm_stats` with the same `cap_percentile` (the totals are
    loaded for it), so the last day's capped sums are the totals'.
    """
    _, _, series = _load(
        conn,
        tenant_id,
        key,
        attribution=attribution,
        start=start,
        end=end,
        pre_period_days=pre_period_days,
        work_mem=work_mem,
        source=source,
        totals=False,
        daily=True,
        cap_percentile=cap_percentile,
    )
    return series


def load_experiment(
    conn: Any,
    tenant_id: str,
    key: str,
    *,
    attribution: Attribution = Attribution(),
    daily: bool = False,
    pre_period_days: int = DEFAULT_PRE_PERIOD_DAYS,
    source: str = "auto",
    cap_percentile: float | None = DEFAULT_CAP_PERCENTILE,
) -> LoadedExperiment:
    """Definition plus stats, bounded by the experiment's started_at / stopped_at when set.

    `source` as in `load_arm_stats`; the daily series reads the source the totals read.
    """
    _check_source(source, attribution)  # before reading anything, as the loaders do
    definition = load_definition(conn, tenant_id, key)
    start = definition.started_at if definition else None
    end = definition.stopped_at if definition else None
    used, stats, series = _load(
        conn,
        tenant_id,
        key,
        attribution=attribution,
        start=start,
        end=end,
        pre_period_days=pre_period_days,
        work_mem=DEFAULT_WORK_MEM,
        source=source,
        totals=True,
        daily=daily,
        cap_percentile=cap_percentile,
    )
    return LoadedExperiment(definition, stats.with_daily(series) if daily else stats, used)


def load_experiment_stats(
    conn: Any,
    tenant_id: str,
    key: str,
    *,
    attribution: Attribution = Attribution(),
    daily: bool = False,
    pre_period_days: int = DEFAULT_PRE_PERIOD_DAYS,
    source: str = "auto",
    cap_percentile: float | None = DEFAULT_CAP_PERCENTILE,
) -> tuple[ExperimentDefinition | None, ExperimentStats]:
    """(definition, stats) of `load_experiment`."""
    loaded = load_experiment(
        conn,
        tenant_id,
        key,
        attribution=attribution,
        daily=daily,
        pre_period_days=pre_period_days,
        source=source,
        cap_percentile=cap_percentile,
    )
    return loaded.definition, loaded.stats


def analyze(
    conn: Any, tenant_id: str, key: str, options: ReportOptions = ReportOptions(), now: datetime | None = None
) -> dict[str, Any] | None:
    """The report of experiment `key` from live statistics, or None when it neither exists nor has exposures.

    What the CLI, the API and the dashboards (without a snapshot) show. Raises ValueError for an
    invalid stored definition or invalid options (caller shows it).
    """
    definition, stats = load_experiment_stats(
        conn,
        tenant_id,
        key,
        attribution=options.attribution,
        daily=options.daily,
        pre_period_days=options.pre_period_days,
        cap_percentile=options.cap_percentile,
    )
    if definition is None and not stats.arms:
        return None
    planned = (
        load_planned_sample_size(conn, tenant_id, key) if not options.tuning_n and definition is not None else None
    )
    return report_for(definition, stats, options, planned_sample_size=planned, as_of=now, tenant_id=tenant_id)
