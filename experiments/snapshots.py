"""Result snapshots: an experiment's sufficient statistics computed on a schedule, read by pages.

At 10M events the per-day series takes ~25 s in Postgres while a report over loaded statistics
takes milliseconds, so (as GrowthBook and Eppo do) the statistics are computed in the background
and stored: table `experiment_snapshots` (migration 0006), one row per experiment holding the
`ExperimentStats` with its daily series for the default analysis (request attribution, default
pre-period). Stats, not a rendered report: every option the report takes (sequential, correction,
alpha, metric) is still applied by `experiments/` on the small stored statistics.

A snapshot is used only for the definition it was computed for (start, stop, arms) and while it
is younger than the reader's max age; one taken after the experiment stopped does not expire.
Writers take a transaction-level advisory lock per experiment, so two workers never compute the
same one. Like the loader, these functions take a connection and never commit.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine

from experiments.analysis import ReportOptions, days_elapsed
from experiments.definition import ExperimentDefinition
from experiments.loader import (
    DEFAULT_PRE_PERIOD_DAYS,
    Attribution,
    load_definition,
    load_experiment_stats,
    load_planned_sample_size,
)
from experiments.report import build_report
from experiments.sequential import DEFAULT_TUNING_N
from experiments.stats import ArmStats, DailyArmStats, ExperimentStats

log = logging.getLogger(__name__)

FORMAT = 1  # of the stored JSON; rows of another format are ignored (recomputed)
LOCK_CLASS = 0x56534E50  # first key of the advisory lock ("VSNP"); the second is hashtext(tenant/key)
_INT_FIELDS = frozenset(f.name for f in fields(ArmStats) if f.type == "int")
_NUMBER_FIELDS = tuple(f.name for f in fields(ArmStats) if f.name != "arm")


@dataclass(frozen=True)
class Snapshot:
    """An experiment's statistics as of `computed_at`, with the definition they were computed for."""

    definition: ExperimentDefinition | None
    stats: ExperimentStats  # with .daily
    computed_at: datetime
    source: str  # "rollup" | "raw": which path of the loader answered
    duration_ms: int
    planned_sample_size: int | None = None  # read live, not stored (the sequential tuning parameter)


@dataclass(frozen=True)
class Refresh:
    """What `refresh_due` did for one experiment."""

    tenant_id: str
    key: str
    status: str  # "refreshed" | "locked" (another process is computing it) | "fresh" | "error"
    source: str | None = None
    duration_ms: int | None = None
    computed_at: datetime | None = None
    error: str | None = None


# --- JSON ----------------------------------------------------------------------------------------

def _arm_to_json(a: ArmStats) -> dict[str, Any]:
    return a.to_dict()


def _arm_from_json(d: dict[str, Any]) -> ArmStats:
    # JSONB stores numbers as numeric: 1e20 comes back as an int, 2.0 may too. The decimal value is
    # exactly the one json.dumps wrote (the shortest repr of the float), so casting back by the
    # field's type gives the same float bit for bit.
    return ArmStats(arm=str(d["arm"]), **{name: (int(d[name]) if name in _INT_FIELDS else float(d[name]))
                                          for name in _NUMBER_FIELDS})


def stats_to_json(stats: ExperimentStats) -> dict[str, Any]:
    """`ExperimentStats` (with its daily series) as plain JSON values; `stats_from_json` inverts it exactly."""
    return {"key": stats.key, "multi_arm_users": stats.multi_arm_users,
            "arms": [_arm_to_json(a) for a in stats.arms],
            "daily": [{"day": d.day.isoformat(), "stats": _arm_to_json(d.stats)} for d in stats.daily]}


def stats_from_json(d: dict[str, Any]) -> ExperimentStats:
    """The `ExperimentStats` that `stats_to_json` serialised."""
    return ExperimentStats(
        key=str(d["key"]), arms=tuple(_arm_from_json(a) for a in d["arms"]),
        multi_arm_users=int(d["multi_arm_users"]),
        daily=tuple(DailyArmStats(date.fromisoformat(x["day"]), _arm_from_json(x["stats"])) for x in d["daily"]))


def _definition_fields(definition: ExperimentDefinition) -> tuple:
    """What the statistics depend on: the analysis window and the arms."""
    return (definition.started_at, definition.stopped_at, tuple((a.name, float(a.weight)) for a in definition.arms))


def _row_fields(row: Any) -> tuple:
    return (row["started_at"], row["stopped_at"], tuple((str(a["name"]), float(a["weight"])) for a in row["arms"]))


# --- reading and writing -------------------------------------------------------------------------

_SELECT = """SELECT format, computed_at, source, duration_ms, started_at, stopped_at, arms, stats
FROM experiment_snapshots WHERE tenant_id = :tenant AND experiment = :key"""

_UPSERT = """
INSERT INTO experiment_snapshots AS s (tenant_id, experiment, format, computed_at, source, duration_ms,
                                       started_at, stopped_at, arms, stats)
VALUES (:tenant, :key, :format, :computed_at, :source, :duration_ms, :started_at, :stopped_at,
        CAST(:arms AS jsonb), CAST(:stats AS jsonb))
ON CONFLICT (tenant_id, experiment) DO UPDATE SET
    format = excluded.format, computed_at = excluded.computed_at, source = excluded.source,
    duration_ms = excluded.duration_ms, started_at = excluded.started_at, stopped_at = excluded.stopped_at,
    arms = excluded.arms, stats = excluded.stats
"""


def is_final(definition: ExperimentDefinition, computed_at: datetime) -> bool:
    """True when the snapshot was taken after the experiment stopped (it no longer expires)."""
    return definition.stopped_at is not None and computed_at >= definition.stopped_at


def _valid(definition: ExperimentDefinition, row: Any, max_age_s: float, now: datetime) -> bool:
    """The row holds statistics for this definition, in the current format, young enough (or final)."""
    if row["format"] != FORMAT or _row_fields(row) != _definition_fields(definition):
        return False
    return is_final(definition, row["computed_at"]) or now - row["computed_at"] <= timedelta(seconds=max_age_s)


def load_snapshot(conn: Any, tenant_id: str, key: str, max_age_s: float,
                  now: datetime | None = None) -> Snapshot | None:
    """The stored snapshot, or None when missing, older than `max_age_s` or computed for another definition."""
    definition = load_definition(conn, tenant_id, key)
    if definition is None:
        return None
    row = conn.execute(text(_SELECT), {"tenant": tenant_id, "key": key}).mappings().first()
    if row is None or not _valid(definition, row, max_age_s, now or datetime.now(UTC)):
        return None
    return Snapshot(definition, stats_from_json(row["stats"]), row["computed_at"], row["source"],
                    row["duration_ms"], load_planned_sample_size(conn, tenant_id, key))


def try_lock(conn: Any, tenant_id: str, key: str) -> bool:
    """Take the experiment's advisory lock for this transaction if nobody holds it."""
    return bool(conn.execute(text("SELECT pg_try_advisory_xact_lock(:cls, hashtext(:tenant || '/' || :key))"),
                             {"cls": LOCK_CLASS, "tenant": tenant_id, "key": key}).scalar())


def lock(conn: Any, tenant_id: str, key: str) -> None:
    """Wait for the experiment's advisory lock (held until this transaction ends)."""
    conn.execute(text("SELECT pg_advisory_xact_lock(:cls, hashtext(:tenant || '/' || :key))"),
                 {"cls": LOCK_CLASS, "tenant": tenant_id, "key": key})


def compute_snapshot(conn: Any, tenant_id: str, key: str) -> Snapshot:
    """Load the default analysis' statistics with the daily series now (the slow part; writes nothing)."""
    computed_at = conn.execute(text("SELECT clock_timestamp()")).scalar()
    t0 = time.perf_counter()
    try:  # "rollup" is what "auto" tries first; it raises instead of falling back, which names the source
        definition, stats = load_experiment_stats(conn, tenant_id, key, daily=True, source="rollup")
        source = "rollup"
    except ValueError:  # not exact for these bounds (or a bad definition, which raises again below)
        definition, stats = load_experiment_stats(conn, tenant_id, key, daily=True, source="raw")
        source = "raw"
    duration_ms = round((time.perf_counter() - t0) * 1000)
    planned = load_planned_sample_size(conn, tenant_id, key) if definition is not None else None
    return Snapshot(definition, stats, computed_at, source, duration_ms, planned)


def save_snapshot(conn: Any, tenant_id: str, snapshot: Snapshot) -> None:
    """Upsert the snapshot (an experiment without a stored definition has nothing to key it on: skipped)."""
    d = snapshot.definition
    if d is None:
        return
    conn.execute(text(_UPSERT), {
        "tenant": tenant_id, "key": d.key, "format": FORMAT, "computed_at": snapshot.computed_at,
        "source": snapshot.source, "duration_ms": snapshot.duration_ms, "started_at": d.started_at,
        "stopped_at": d.stopped_at, "arms": json.dumps([{"name": a.name, "weight": a.weight} for a in d.arms]),
        "stats": json.dumps(stats_to_json(snapshot.stats), allow_nan=False)})


def refresh_snapshot(conn: Any, tenant_id: str, key: str) -> Snapshot:
    """Compute the experiment's statistics now and store them; the caller owns the transaction (and lock)."""
    snapshot = compute_snapshot(conn, tenant_id, key)
    save_snapshot(conn, tenant_id, snapshot)
    return snapshot


def snapshot_or_compute(conn: Any, tenant_id: str, key: str, max_age_s: float,
                        force: bool = False) -> tuple[Snapshot, bool]:
    """(a valid stored snapshot, False), else (one computed now and stored, True): what a page reads.

    Waits for the experiment's lock, so a page opened while a worker computes the same experiment
    gets the worker's result instead of computing it a second time. `force`: always recompute.
    """
    if not force:
        found = load_snapshot(conn, tenant_id, key, max_age_s)
        if found is not None:
            return found, False
    lock(conn, tenant_id, key)
    if not force:
        found = load_snapshot(conn, tenant_id, key, max_age_s)  # someone finished while we waited
        if found is not None:
            return found, False
    return refresh_snapshot(conn, tenant_id, key), True


# --- the scheduled job ---------------------------------------------------------------------------

_CANDIDATES = """
SELECT e.tenant_id, e.key, e.status, e.arms, e.started_at, e.stopped_at
FROM experiments e
WHERE (CAST(:tenant AS text) IS NULL OR e.tenant_id = :tenant)
  AND (CAST(:key AS text) IS NULL OR e.key = :key)
  AND (CAST(:key AS text) IS NOT NULL OR e.status IN ('running', 'stopped'))
ORDER BY e.tenant_id, e.key
"""


def is_due(status: str, definition: ExperimentDefinition, row: Any | None, older_than_s: float,
           now: datetime) -> bool:
    """Running: no valid snapshot at most `older_than_s` old. Stopped: no valid snapshot taken after the stop."""
    if row is None or row["format"] != FORMAT or _row_fields(row) != _definition_fields(definition):
        return True
    if status == "running":
        return now - row["computed_at"] >= timedelta(seconds=older_than_s)
    if definition.stopped_at is not None:
        return row["computed_at"] < definition.stopped_at
    return False  # stopped without a stop time (a benchmark's): one snapshot is enough


def refresh_due(engine: Engine, *, older_than_s: float, tenant_id: str | None = None, key: str | None = None,
                force: bool = False, now: datetime | None = None) -> list[Refresh]:
    """Refresh the snapshots that are due (running experiments, stopped ones not yet seen stopped).

    One transaction per experiment under its advisory lock: another process computing it gets
    "locked" and moves on. `key` selects one experiment whatever its status; `force` refreshes
    every selected experiment whether due or not. A definition that does not validate is reported
    as "error" and the others go on.
    """
    with engine.connect() as conn:
        candidates = conn.execute(text(_CANDIDATES), {"tenant": tenant_id, "key": key}).mappings().all()
    done = []
    for c in candidates:
        t, k = c["tenant_id"], c["key"]
        try:
            with engine.begin() as conn:
                definition = load_definition(conn, t, k)
                if definition is None:
                    continue
                row = conn.execute(text(_SELECT), {"tenant": t, "key": k}).mappings().first()
                at = now or datetime.now(UTC)
                if not force and not is_due(c["status"], definition, row, older_than_s, at):
                    continue
                if not try_lock(conn, t, k):
                    done.append(Refresh(t, k, "locked"))
                    continue
                # Another process may have finished it between our read and the lock.
                row = conn.execute(text(_SELECT), {"tenant": t, "key": k}).mappings().first()
                if not force and not is_due(c["status"], definition, row, older_than_s, at):
                    done.append(Refresh(t, k, "fresh", row["source"], row["duration_ms"], row["computed_at"]))
                    continue
                s = refresh_snapshot(conn, t, k)
            log.info("snapshot of %s/%s refreshed in %d ms (%s)", t, k, s.duration_ms, s.source)
            done.append(Refresh(t, k, "refreshed", s.source, s.duration_ms, s.computed_at))
        except ValueError as exc:  # an invalid stored definition: say so, refresh the others
            log.warning("snapshot of %s/%s not refreshed: %s", t, k, exc)
            done.append(Refresh(t, k, "error", error=str(exc)))
    return done


# --- reports from a snapshot ---------------------------------------------------------------------

def snapshot_report(snapshot: Snapshot, options: ReportOptions | None = None,
                    tenant_id: str | None = None) -> dict[str, Any] | None:
    """What `experiments.analysis.analyze` returns for these options, built from the snapshot's statistics.

    Days elapsed are counted at the snapshot's as-of time. Raises ValueError for options a snapshot
    cannot answer (another attribution or pre-period: those need `analyze`).
    """
    options = options or ReportOptions()
    if options.attribution != Attribution() or options.pre_period_days != DEFAULT_PRE_PERIOD_DAYS:
        raise ValueError("snapshots hold the default attribution and pre-period only; use analyze()")
    definition, stats = snapshot.definition, snapshot.stats.with_daily(())  # analyze's report has no daily
    if definition is None and not stats.arms:
        return None
    tuning_n = options.tuning_n or (snapshot.planned_sample_size if definition is not None else 0) or 0
    return build_report(definition, stats, alpha=options.alpha, correction=options.correction,
                        metrics=options.metrics, sequential=options.sequential,
                        tuning_n=tuning_n or DEFAULT_TUNING_N, cuped=options.cuped,
                        target_relative_mde=options.target_relative_mde,
                        days_elapsed=days_elapsed(definition, snapshot.computed_at), tenant_id=tenant_id)
