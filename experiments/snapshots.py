"""Result snapshots, the pure part: what one holds, its exact JSON form, when it is valid or due, its report.

At 10M events the per-day series takes tens of seconds in Postgres while a report over loaded
statistics takes milliseconds (docs/dashboards.md), so (as GrowthBook and Eppo do) the statistics
are computed in the background and stored (`db/experiment_snapshots.py`, table
`experiment_snapshots`): one row per experiment holding the `ExperimentStats` with its daily series
for the default analysis (request attribution, default pre-period). Stats, not a rendered report:
every option the report takes (sequential, correction, alpha, metric) is still applied here on the
small stored statistics.

A snapshot is used only for the definition it was computed for (start, stop, arms) and while it
is younger than the reader's max age; one taken after the experiment stopped does not expire.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import date, datetime, timedelta
from typing import Any

from experiments.analysis import DEFAULT_PRE_PERIOD_DAYS, Attribution, ReportOptions, report_for
from experiments.definition import ExperimentDefinition
from experiments.stats import ArmStats, DailyArmStats, ExperimentStats

# of the stored JSON; rows of another format are ignored (recomputed). 2: capped revenue (#17);
# 3: CUPED sums for CTR and capped revenue in the daily series (#17)
FORMAT = 3
_INT_FIELDS = frozenset(f.name for f in fields(ArmStats) if f.type == "int")
_NUMBER_FIELDS = tuple(f.name for f in fields(ArmStats) if f.name != "arm")


@dataclass(frozen=True)
class Snapshot:
    """An experiment's statistics as of `computed_at`, with the definition they were computed for."""

    definition: ExperimentDefinition | None
    stats: ExperimentStats  # with .daily
    computed_at: datetime
    source: str  # "rollup" | "raw": which source of `db.experiment_stats` answered
    duration_ms: int
    planned_sample_size: int | None = None  # read live, not stored (the sequential tuning parameter)


# --- JSON ----------------------------------------------------------------------------------------


def _arm_to_json(a: ArmStats) -> dict[str, Any]:
    return a.to_dict()


def _arm_from_json(d: dict[str, Any]) -> ArmStats:
    # JSONB stores numbers as numeric: 1e20 comes back as an int, 2.0 may too. The decimal value is
    # exactly the one json.dumps wrote (the shortest repr of the float), so casting back by the
    # field's type gives the same float bit for bit.
    return ArmStats(
        arm=str(d["arm"]),
        **{name: (int(d[name]) if name in _INT_FIELDS else float(d[name])) for name in _NUMBER_FIELDS},
    )


def stats_to_json(stats: ExperimentStats) -> dict[str, Any]:
    """`ExperimentStats` (with its daily series) as plain JSON values; `stats_from_json` inverts it exactly."""
    return {
        "key": stats.key,
        "multi_arm_users": stats.multi_arm_users,
        "arms": [_arm_to_json(a) for a in stats.arms],
        "daily": [{"day": d.day.isoformat(), "stats": _arm_to_json(d.stats)} for d in stats.daily],
        "revenue_cap": stats.revenue_cap,
        "revenue_cap_percentile": stats.revenue_cap_percentile,
    }


def stats_from_json(d: dict[str, Any]) -> ExperimentStats:
    """The `ExperimentStats` that `stats_to_json` serialised."""
    return ExperimentStats(
        key=str(d["key"]),
        arms=tuple(_arm_from_json(a) for a in d["arms"]),
        multi_arm_users=int(d["multi_arm_users"]),
        daily=tuple(DailyArmStats(date.fromisoformat(x["day"]), _arm_from_json(x["stats"])) for x in d["daily"]),
        revenue_cap=None if d.get("revenue_cap") is None else float(d["revenue_cap"]),
        revenue_cap_percentile=None if d.get("revenue_cap_percentile") is None else float(d["revenue_cap_percentile"]),
    )


def arms_to_json(definition: ExperimentDefinition) -> list[dict[str, Any]]:
    """The arms a snapshot was computed for, as stored beside it (compared by `is_valid` and `is_due`)."""
    return [{"name": a.name, "weight": a.weight} for a in definition.arms]


# --- validity ------------------------------------------------------------------------------------


def _definition_fields(definition: ExperimentDefinition) -> tuple:
    """What the statistics depend on: the analysis window and the arms."""
    return (definition.started_at, definition.stopped_at, tuple((a.name, float(a.weight)) for a in definition.arms))


def _row_fields(row: Any) -> tuple:
    return (row["started_at"], row["stopped_at"], tuple((str(a["name"]), float(a["weight"])) for a in row["arms"]))


def is_final(definition: ExperimentDefinition, computed_at: datetime) -> bool:
    """True when the snapshot was taken after the experiment stopped (it no longer expires)."""
    return definition.stopped_at is not None and computed_at >= definition.stopped_at


def is_valid(definition: ExperimentDefinition, row: Any, max_age_s: float, now: datetime) -> bool:
    """The stored row holds statistics for this definition, in the current format, young enough (or final)."""
    if row["format"] != FORMAT or _row_fields(row) != _definition_fields(definition):
        return False
    return is_final(definition, row["computed_at"]) or now - row["computed_at"] <= timedelta(seconds=max_age_s)


def is_due(status: str, definition: ExperimentDefinition, row: Any | None, older_than_s: float, now: datetime) -> bool:
    """Running: no valid snapshot at most `older_than_s` old. Stopped: no valid snapshot taken after the stop."""
    if row is None or row["format"] != FORMAT or _row_fields(row) != _definition_fields(definition):
        return True
    if status == "running":
        return now - row["computed_at"] >= timedelta(seconds=older_than_s)
    if definition.stopped_at is not None:
        return row["computed_at"] < definition.stopped_at
    return False  # stopped without a stop time (a benchmark's): one snapshot is enough


# --- reports from a snapshot ---------------------------------------------------------------------


def snapshot_report(
    snapshot: Snapshot, options: ReportOptions | None = None, tenant_id: str | None = None
) -> dict[str, Any] | None:
    """What `db.experiment_stats.analyze` returns for these options, built from the snapshot's statistics.

    Days elapsed are counted at the snapshot's as-of time. Raises ValueError for options a snapshot
    cannot answer (another attribution or pre-period: those need `analyze`).
    """
    options = options or ReportOptions()
    if options.attribution != Attribution() or options.pre_period_days != DEFAULT_PRE_PERIOD_DAYS:
        raise ValueError("snapshots hold the default attribution and pre-period only; use analyze()")
    definition, stats = snapshot.definition, snapshot.stats.with_daily(())  # analyze's report has no daily
    if definition is None and not stats.arms:
        return None
    return report_for(
        definition,
        stats,
        options,
        planned_sample_size=snapshot.planned_sample_size,
        as_of=snapshot.computed_at,
        tenant_id=tenant_id,
    )
