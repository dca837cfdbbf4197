"""Result snapshots (db/experiment_snapshots.py, experiments/snapshots.py, migration 0006) against a real Postgres.

Exactness is dataclass equality (bit for bit), as in test_rollup.py: a snapshot must give the
numbers a live load gives. The events are rollup_data.py's adversarial scenario plus random traffic.
"""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from db.experiment_snapshots import (
    compute_snapshot,
    load_snapshot,
    refresh_due,
    refresh_snapshot,
    snapshot_or_compute,
    try_lock,
)
from db.experiment_stats import analyze, load_experiment_stats
from experiments.analysis import ReportOptions
from experiments.snapshots import FORMAT, snapshot_report, stats_from_json, stats_to_json
from experiments.stats import ArmStats, DailyArmStats, ExperimentStats
from tests.experiments.rollup_data import SCENARIO, random_events, setup_tenants, write

pytestmark = pytest.mark.integration


@pytest.fixture
def engine(db_engine):
    setup_tenants(db_engine)  # t1 with running experiments e1, e2 (and an empty tenant t2)
    write(db_engine, SCENARIO + random_events(4), batch=200)
    return db_engine


def _refresh(engine, key="e1"):
    with engine.begin() as conn:
        return refresh_snapshot(conn, "t1", key)


def _stored(engine, key="e1"):
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT computed_at FROM experiment_snapshots WHERE tenant_id = 't1' AND experiment = :k"), {"k": key}
        ).scalar()


def test_json_round_trip_is_exact_on_loaded_stats(engine):
    with engine.connect() as conn:
        _, live = load_experiment_stats(conn, "t1", "e1", daily=True)
    # Not vacuous: non-integer sums (revenue, click rates) and a daily series with several days.
    assert live.daily and len({d.day for d in live.daily}) > 1
    assert any(a.click_rate_sum % 1 and a.revenue_sum % 1 for a in live.arms)
    assert stats_from_json(json.loads(json.dumps(stats_to_json(live)))) == live
    snap = _refresh(engine)
    with engine.connect() as conn:
        stored = load_snapshot(conn, "t1", "e1", max_age_s=3600)
    assert snap.stats == live
    assert stored is not None and stored.stats == live  # through JSONB (numeric) and back
    assert stored.source == snap.source == "rollup" and stored.computed_at == snap.computed_at


def test_awkward_floats_survive_jsonb(db_engine):
    # JSONB keeps numbers as numeric: 1e300 comes back as a 301-digit integer, 2.0 as "2.0".
    arm = ArmStats(
        arm="visual",
        users=3,
        exposures=2**53 - 1,
        exposures_sum_squares=1e300,
        clicks_sum_squares=2.0,
        click_rate_sum=0.1 + 0.2,
        click_rate_sum_squares=1e-300,
        revenue_sum=123456.78901234567,
        revenue_sum_squares=5e-324,
        pre_revenue_sum=-0.0,
        revenue_pre_revenue_sum_products=1 / 3,
    )
    stats = ExperimentStats(
        "x",
        (arm,),
        multi_arm_users=2,
        daily=(DailyArmStats(date(2026, 3, 1), arm), DailyArmStats(date(2026, 3, 2), arm)),
    )
    with db_engine.connect() as conn:
        back = conn.execute(text("SELECT CAST(:j AS jsonb)"), {"j": json.dumps(stats_to_json(stats))}).scalar()
    assert stats_from_json(back) == stats
    assert stats_from_json(back).arms[0].revenue_sum_squares == 5e-324  # the smallest subnormal too


def test_snapshot_is_used_when_fresh_and_ignored_when_stale_or_the_definition_changed(engine):
    snap = _refresh(engine)
    at = snap.computed_at
    with engine.connect() as conn:
        assert load_snapshot(conn, "t1", "e1", max_age_s=60, now=at + timedelta(seconds=59)) is not None
        assert load_snapshot(conn, "t1", "e1", max_age_s=60, now=at + timedelta(seconds=61)) is None  # stale
        assert load_snapshot(conn, "t1", "e2", max_age_s=60) is None  # never computed
        assert load_snapshot(conn, "t1", "nope", max_age_s=60) is None  # no such experiment
    changes = [
        (
            'UPDATE experiments SET arms = \'[{"name": "baseline", "weight": 0.4}, '
            '{"name": "visual", "weight": 0.6}]\'::jsonb'
        ),
        "UPDATE experiments SET started_at = started_at - interval '1 day'",
        "UPDATE experiments SET stopped_at = now() + interval '1 hour'",
    ]
    for change in changes:
        _refresh(engine)
        with engine.begin() as conn:
            assert load_snapshot(conn, "t1", "e1", max_age_s=60) is not None
            conn.execute(text(change + " WHERE tenant_id = 't1' AND key = 'e1'"))
            assert load_snapshot(conn, "t1", "e1", max_age_s=60) is None, change
    with engine.begin() as conn:  # a snapshot of another format is ignored
        _refresh(engine)
        conn.execute(text("UPDATE experiment_snapshots SET format = :f"), {"f": FORMAT + 1})
        assert load_snapshot(conn, "t1", "e1", max_age_s=60) is None


def test_a_snapshot_taken_after_the_stop_does_not_expire(engine):
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE experiments SET status = 'stopped', stopped_at = now() - interval '1 minute' WHERE key = 'e1'")
        )
    snap = _refresh(engine)
    with engine.connect() as conn:
        later = load_snapshot(conn, "t1", "e1", max_age_s=60, now=snap.computed_at + timedelta(days=30))
    assert later is not None and later.stats == snap.stats


def test_report_from_a_snapshot_equals_analyze(engine):
    with engine.begin() as conn:
        conn.execute(text("UPDATE experiments SET planned_sample_size = 400 WHERE key = 'e1'"))
    snap = _refresh(engine)
    assert snap.planned_sample_size == 400
    for options in (ReportOptions(), ReportOptions(sequential=True, correction="fdr_bh", alpha=0.1)):
        with engine.connect() as conn:
            expected = analyze(conn, "t1", "e1", options, now=snap.computed_at)
        assert snapshot_report(snap, options, tenant_id="t1") == expected
    with pytest.raises(ValueError, match="default attribution"):
        snapshot_report(snap, ReportOptions(pre_period_days=7))


def test_snapshot_or_compute_stores_then_reuses_and_force_recomputes(engine):
    with engine.begin() as conn:
        first, computed = snapshot_or_compute(conn, "t1", "e1", max_age_s=600)
    assert computed and _stored(engine) == first.computed_at
    with engine.begin() as conn:
        again, computed = snapshot_or_compute(conn, "t1", "e1", max_age_s=600)
    assert not computed and again.computed_at == first.computed_at and again.stats == first.stats
    with engine.begin() as conn:
        forced, computed = snapshot_or_compute(conn, "t1", "e1", max_age_s=600, force=True)
    assert computed and forced.computed_at > first.computed_at and _stored(engine) == forced.computed_at


def test_the_raw_path_is_named_when_the_rollup_cannot_answer(engine):
    with engine.begin() as conn:  # a start after some exposures: the rollup is not exact for these bounds
        conn.execute(text("UPDATE experiments SET started_at = started_at + interval '2 hours' WHERE key = 'e1'"))
        snap = compute_snapshot(conn, "t1", "e1")
        _, live = load_experiment_stats(conn, "t1", "e1", daily=True, source="raw")
    assert snap.source == "raw" and snap.stats == live


def test_refresh_due_picks_running_and_newly_stopped_experiments(engine):
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO experiments (tenant_id, key, placement, status, arms, traffic_fraction, salt, "
                "hash_version, primary_metric, guardrails) SELECT tenant_id, 'draft-one', 'search', 'draft', arms, "
                "1.0, 'd', 1, 'ctr', '[]'::jsonb FROM experiments WHERE key = 'e1'"
            )
        )
    first = refresh_due(engine, older_than_s=300)
    assert [(r.key, r.status) for r in first] == [("e1", "refreshed"), ("e2", "refreshed")]  # not the draft
    assert all(r.duration_ms >= 0 and r.source == "rollup" for r in first)
    assert refresh_due(engine, older_than_s=300) == []  # nothing due any more
    later = datetime.now(UTC) + timedelta(seconds=301)
    assert [r.key for r in refresh_due(engine, older_than_s=300, now=later)] == ["e1", "e2"]
    with engine.begin() as conn:  # e1 stops after its last snapshot: due once, then final
        conn.execute(text("UPDATE experiments SET status = 'stopped', stopped_at = now() WHERE key = 'e1'"))
    assert [r.key for r in refresh_due(engine, older_than_s=300)] == ["e1"]
    far = datetime.now(UTC) + timedelta(days=10)
    assert [r.key for r in refresh_due(engine, older_than_s=300, now=far)] == ["e2"]  # running only
    # explicit selection and force: what `vitrine experiment refresh --key` does
    assert [(r.key, r.status) for r in refresh_due(engine, older_than_s=300, key="draft-one", force=True)] == [
        ("draft-one", "refreshed")
    ]


def test_the_advisory_lock_keeps_a_second_worker_out(engine):
    with engine.connect() as other:
        with other.begin():
            assert try_lock(other, "t1", "e1")  # another worker is computing e1
            done = refresh_due(engine, older_than_s=300)
            assert [(r.key, r.status) for r in done] == [("e1", "locked"), ("e2", "refreshed")]
            assert _stored(engine, "e1") is None
        # lock released with the transaction: the next tick computes it
        assert [(r.key, r.status) for r in refresh_due(engine, older_than_s=300)] == [("e1", "refreshed")]


def test_concurrent_refreshes_compute_each_experiment_once(engine):
    results: list = []
    barrier = threading.Barrier(3)

    def worker():
        barrier.wait()
        results.extend(refresh_due(engine, older_than_s=300))

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    refreshed = sorted(r.key for r in results if r.status == "refreshed")
    assert refreshed == ["e1", "e2"]  # each once, whoever got there first
    assert all(r.status in ("refreshed", "locked", "fresh") for r in results)


def test_the_worker_timer_job_refreshes_and_never_raises(engine, caplog):
    from streams.worker import refresh_results

    done = asyncio.run(refresh_results(engine, 300))
    assert [(r.key, r.status) for r in done] == [("e1", "refreshed"), ("e2", "refreshed")]
    assert _stored(engine, "e1") is not None
    gone = create_engine(engine.url.set(database="no_such_database"))  # the database is away
    try:
        assert asyncio.run(refresh_results(gone, 300)) == []  # logged, not raised
    finally:
        gone.dispose()
    assert "refreshing experiment result snapshots failed" in caplog.text


def test_cli_refresh_prints_what_it_refreshed(engine, monkeypatch):
    import vitrine.cli.experiment  # noqa: F401  registers the commands
    from vitrine.cli.app import app

    monkeypatch.setenv("VITRINE_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    out = CliRunner().invoke(app, ["experiment", "refresh", "--tenant", "t1"])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0].split() == ["tenant", "experiment", "status", "seconds", "source"]
    rows = [line.split() for line in lines[1:]]
    assert [(r[0], r[1], r[2], r[4]) for r in rows] == [
        ("t1", "e1", "refreshed", "rollup"),
        ("t1", "e2", "refreshed", "rollup"),
    ]
    assert all(float(r[3]) >= 0 for r in rows)
    assert _stored(engine, "e1") is not None
    out = CliRunner().invoke(app, ["experiment", "refresh", "--key", "missing"])
    assert out.exit_code == 0 and "nothing to refresh" in out.output


def test_migration_0006_upgrades_and_downgrades(postgres):
    import os

    from alembic import command

    from db.migrate import alembic_config, upgrade
    from db.session import create_db_engine

    url = postgres.create_database(f"snap{os.getpid()}")  # empty, not from the template
    upgrade(url, "0005")
    engine = create_db_engine(url)
    exists = "SELECT to_regclass('experiment_snapshots') IS NOT NULL"
    try:
        with engine.connect() as conn:
            assert not conn.execute(text(exists)).scalar()
        upgrade(url)
        setup_tenants(engine)
        write(engine, SCENARIO)
        _refresh(engine)
        assert _stored(engine) is not None
        command.downgrade(alembic_config(url), "0005")
        with engine.connect() as conn:
            assert not conn.execute(text(exists)).scalar()
        upgrade(url)
        assert refresh_due(engine, older_than_s=300)[0].status == "refreshed"
    finally:
        engine.dispose()
