"""Result snapshots in Postgres: computed, stored, read and refreshed on a schedule under an advisory lock.

Table `experiment_snapshots` (migration 0006), one row per experiment; what a row holds and when it
is valid or due is `experiments/snapshots.py` (pure). Writers take a transaction-level advisory
lock per experiment, so two workers never compute the same one. Like the loader, these functions
take a connection and never commit, except `refresh_due`, which owns one transaction per experiment.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine

from db.experiment_stats import load_experiment
from db.experiments import load_definition, load_planned_sample_size
from experiments.snapshots import FORMAT, Snapshot, arms_to_json, is_due, is_valid, stats_from_json, stats_to_json

log = logging.getLogger(__name__)

LOCK_CLASS = 0x56534E50  # first key of the advisory lock ("VSNP"); the second is hashtext(tenant/key)


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

_CANDIDATES = """
SELECT e.tenant_id, e.key, e.status
FROM experiments e
WHERE (CAST(:tenant AS text) IS NULL OR e.tenant_id = :tenant)
  AND (CAST(:key AS text) IS NULL OR e.key = :key)
  AND (CAST(:key AS text) IS NOT NULL OR e.status IN ('running', 'stopped'))
ORDER BY e.tenant_id, e.key
"""


def _stored_row(conn: Any, tenant_id: str, key: str) -> Any | None:
    return conn.execute(text(_SELECT), {"tenant": tenant_id, "key": key}).mappings().first()


def load_snapshot(
    conn: Any, tenant_id: str, key: str, max_age_s: float, now: datetime | None = None
) -> Snapshot | None:
    """The stored snapshot, or None when missing, older than `max_age_s` or computed for another definition."""
    definition = load_definition(conn, tenant_id, key)
    if definition is None:
        return None
    row = _stored_row(conn, tenant_id, key)
    if row is None or not is_valid(definition, row, max_age_s, now or datetime.now(UTC)):
        return None
    return Snapshot(
        definition,
        stats_from_json(row["stats"]),
        row["computed_at"],
        row["source"],
        row["duration_ms"],
        load_planned_sample_size(conn, tenant_id, key),
    )


def try_lock(conn: Any, tenant_id: str, key: str) -> bool:
    """Take the experiment's advisory lock for this transaction if nobody holds it."""
    return bool(
        conn.execute(
            text("SELECT pg_try_advisory_xact_lock(:cls, hashtext(:tenant || '/' || :key))"),
            {"cls": LOCK_CLASS, "tenant": tenant_id, "key": key},
        ).scalar()
    )


def lock(conn: Any, tenant_id: str, key: str) -> None:
    """Wait for the experiment's advisory lock (held until this transaction ends)."""
    conn.execute(
        text("SELECT pg_advisory_xact_lock(:cls, hashtext(:tenant || '/' || :key))"),
        {"cls": LOCK_CLASS, "tenant": tenant_id, "key": key},
    )


def compute_snapshot(conn: Any, tenant_id: str, key: str) -> Snapshot:
    """Load the default analysis' statistics with the daily series now (the slow part; writes nothing)."""
    computed_at = conn.execute(text("SELECT clock_timestamp()")).scalar()
    t0 = time.perf_counter()
    loaded = load_experiment(conn, tenant_id, key, daily=True)
    duration_ms = round((time.perf_counter() - t0) * 1000)
    planned = load_planned_sample_size(conn, tenant_id, key) if loaded.definition is not None else None
    return Snapshot(loaded.definition, loaded.stats, computed_at, loaded.source, duration_ms, planned)


def save_snapshot(conn: Any, tenant_id: str, snapshot: Snapshot) -> None:
    """Upsert the snapshot (an experiment without a stored definition has nothing to key it on: skipped)."""
    d = snapshot.definition
    if d is None:
        return
    conn.execute(
        text(_UPSERT),
        {
            "tenant": tenant_id,
            "key": d.key,
            "format": FORMAT,
            "computed_at": snapshot.computed_at,
            "source": snapshot.source,
            "duration_ms": snapshot.duration_ms,
            "started_at": d.started_at,
            "stopped_at": d.stopped_at,
            "arms": json.dumps(arms_to_json(d)),
            "stats": json.dumps(stats_to_json(snapshot.stats), allow_nan=False),
        },
    )


def refresh_snapshot(conn: Any, tenant_id: str, key: str) -> Snapshot:
    """Compute the experiment's statistics now and store them; the caller owns the transaction (and lock)."""
    snapshot = compute_snapshot(conn, tenant_id, key)
    save_snapshot(conn, tenant_id, snapshot)
    return snapshot


def snapshot_or_compute(
    conn: Any, tenant_id: str, key: str, max_age_s: float, force: bool = False
) -> tuple[Snapshot, bool]:
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


def refresh_due(
    engine: Engine,
    *,
    older_than_s: float,
    tenant_id: str | None = None,
    key: str | None = None,
    force: bool = False,
    now: datetime | None = None,
) -> list[Refresh]:
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
                row = _stored_row(conn, t, k)
                at = now or datetime.now(UTC)
                if not force and not is_due(c["status"], definition, row, older_than_s, at):
                    continue
                if not try_lock(conn, t, k):
                    done.append(Refresh(t, k, "locked"))
                    continue
                # Another process may have finished it between our read and the lock.
                row = _stored_row(conn, t, k)
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
