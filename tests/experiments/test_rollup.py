"""The rollup (migration 0005) against the raw-event SQL: same events, same ExperimentStats.

The raw path (`source="raw"`) is the reference: it is what test_loader.py checks by hand.
Every scenario here seeds events the way real writers do (multi-row INSERT .. ON CONFLICT DO
NOTHING, in batches, in any order) and asserts that the rollup gives the same numbers.
The comparison is exact (dataclass equality): the loader sums money and per-user ratios as
numeric, so neither the path nor the order rows reach an aggregate changes a bit.
"""

from __future__ import annotations

import random
import threading
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert

from db.experiment_stats import load_arm_stats, load_daily_stats, load_experiment_stats, rollup_exact
from db.models import InteractionEvent
from experiments.analysis import Attribution
from experiments.stats import ExperimentStats
from tests.experiments.rollup_data import SCENARIO, START, at, ev, random_events, setup_tenants, write
from tests.helpers import wait_for

pytestmark = pytest.mark.integration


def assert_same(rollup: ExperimentStats, raw: ExperimentStats) -> None:
    """Equal ExperimentStats, daily series included; the arm lists first for a readable failure."""
    assert [a.arm for a in rollup.arms] == [a.arm for a in raw.arms]
    assert rollup == raw


def both(engine, key="e1", tenant="t1", **bounds) -> tuple[ExperimentStats, ExperimentStats]:
    """(rollup, raw) totals with the daily series, for the same bounds."""
    with engine.connect() as conn:
        rollup = load_arm_stats(conn, tenant, key, source="rollup", **bounds).with_daily(
            load_daily_stats(conn, tenant, key, source="rollup", **bounds)
        )
        raw = load_arm_stats(conn, tenant, key, source="raw", **bounds).with_daily(
            load_daily_stats(conn, tenant, key, source="raw", **bounds)
        )
    return rollup, raw


@pytest.fixture
def engine(db_engine):  # a fresh, migrated Postgres per test (tests/conftest.py)
    setup_tenants(db_engine)
    return db_engine


def test_rollup_equals_raw_whatever_the_arrival_order(engine):
    # Outcomes first, then exposures, one event per transaction, and every event delivered twice.
    outcomes_first = sorted(SCENARIO, key=lambda e: e["type"] == "exposure")
    write(engine, outcomes_first + list(reversed(SCENARIO)), batch=1)
    rollup, raw = both(engine, start=START)
    assert_same(rollup, raw)
    # The hand-checked values (as in test_loader.py): u1 x=2 y=2 rev=20.25; u2 x=2 y=1.
    b = rollup.arm("baseline")
    assert (b.users, b.exposures, b.clicks, b.purchasers, b.revenue_sum) == (2, 4, 3, 1, 20.25)
    v = rollup.arm("visual")  # u3 x=4 y=2 purchase of NULL value; u4 x=1 rev=26.25
    assert (v.users, v.exposures, v.clicks, v.purchasers, v.revenue_sum) == (2, 5, 2, 2, 26.25)
    assert (v.pre_active_users, v.pre_purchasers, v.pre_revenue_sum) == (2, 2, 34.5)
    assert rollup.multi_arm_users == 1
    assert [d.day.isoformat() for d in rollup.daily][::2] == ["2026-03-02", "2026-03-03", "2026-03-04"]
    with engine.connect() as conn:  # every waiting outcome found its exposure, except u6's and u9's
        pending = conn.execute(text("SELECT user_id FROM experiment_pending_outcomes ORDER BY 1")).scalars().all()
    assert pending == ["u3", "u4", "u6", "u9"]  # requests never exposed in an experiment
    assert_same(*both(engine, key="e2"))
    assert_same(*both(engine, tenant="t2"))


def test_rollup_equals_raw_in_one_bulk_statement(engine):
    write(engine, SCENARIO)
    assert_same(*both(engine, start=START))
    assert_same(*both(engine))  # unbounded: the pre-period ends at the first exposure


def test_load_experiment_stats_auto_uses_the_rollup_and_matches_raw(engine):
    write(engine, SCENARIO, batch=7)
    with engine.connect() as conn:
        assert rollup_exact(conn, "t1", "e1", START)
        _, auto = load_experiment_stats(conn, "t1", "e1", daily=True)
    rollup, raw = both(engine, start=START)
    assert_same(auto, raw)
    assert_same(auto, rollup)


def test_bounds_the_rollup_cannot_answer_fall_back_to_raw(engine):
    write(
        engine,
        SCENARIO
        + [
            ev("h1", "exposure", "u7", "r20", "e1", "baseline", when=at(-3)),  # before the start
            ev("h2", "click", "u7", "r20", when=at(-4.5)),  # skewed: before the exposure
        ],
    )
    with engine.connect() as conn:
        assert not rollup_exact(conn, "t1", "e1", START)
        assert rollup_exact(conn, "t1", "e1", START - timedelta(hours=5))
        with pytest.raises(ValueError, match="cannot answer"):
            load_arm_stats(conn, "t1", "e1", start=START, source="rollup")
        auto = load_arm_stats(conn, "t1", "e1", start=START).with_daily(load_daily_stats(conn, "t1", "e1", start=START))
        raw = load_arm_stats(conn, "t1", "e1", start=START, source="raw").with_daily(
            load_daily_stats(conn, "t1", "e1", start=START, source="raw")
        )
        end = at(40)  # stops before u3's last exposure
        assert not rollup_exact(conn, "t1", "e1", None, end)
        auto_end = load_arm_stats(conn, "t1", "e1", end=end)
        raw_end = load_arm_stats(conn, "t1", "e1", end=end, source="raw")
        # every exposure is in bounds, but an attributed outcome (u7's click) is before start - 1 h
        assert not rollup_exact(conn, "t1", "e1", START - timedelta(hours=3))
        floor = START - timedelta(hours=3)
        assert load_arm_stats(conn, "t1", "e1", start=floor) == load_arm_stats(
            conn, "t1", "e1", start=floor, source="raw"
        )
    assert_same(auto, raw)
    assert auto_end == raw_end
    assert_same(*both(engine, start=START - timedelta(hours=4)))  # these bounds drop nothing


def test_window_attribution_is_raw_only(engine):
    write(engine, SCENARIO)
    with engine.connect() as conn:
        with pytest.raises(ValueError, match="request attribution only"):
            load_arm_stats(conn, "t1", "e1", attribution=Attribution("window"), source="rollup")
        window = load_arm_stats(conn, "t1", "e1", attribution=Attribution("window"), start=START)
    assert window.arm("baseline").purchasers == 2  # u2's purchase without request id counts here


def test_a_request_shared_by_two_experiments_falls_back_to_raw(engine):
    write(engine, SCENARIO + [ev("k1", "exposure", "u1", "r1", "e2", "visual", when=at(1))])
    with engine.connect() as conn:
        assert not rollup_exact(conn, "t1", "e1", START)
        auto = load_arm_stats(conn, "t1", "e1", start=START)
        raw = load_arm_stats(conn, "t1", "e1", start=START, source="raw")
        assert rollup_exact(conn, "t2", "e1")  # other tenants are unaffected
    assert auto == raw


def test_deletes_and_updates_recompute_the_rollup(engine):
    write(engine, SCENARIO)
    with engine.begin() as conn:
        # u1 loses the exposure of r2 (its purchase waits again) and one click of r1
        conn.execute(text("DELETE FROM interaction_events WHERE event_id IN ('a4', 'a3')"))
    rollup, raw = both(engine, start=START)
    assert_same(rollup, raw)
    assert rollup.arm("baseline").revenue_sum == 0.0
    write(engine, [ev("a4", "exposure", "u1", "r2", "e1", "baseline", when=at(17))])  # comes back
    rollup, raw = both(engine, start=START)
    assert_same(rollup, raw)
    assert rollup.arm("baseline").revenue_sum == 20.25
    with engine.begin() as conn:  # an update moves a click to another request
        conn.execute(text("UPDATE interaction_events SET request_id = 'r7', user_id = 'u4' WHERE event_id = 'a2'"))
    assert_same(*both(engine, start=START))
    with engine.begin() as conn:  # deleting a tenant's events empties its rollup
        conn.execute(text("DELETE FROM interaction_events WHERE tenant_id = 't1'"))
        left = conn.execute(
            text(
                "SELECT (SELECT count(*) FROM experiment_user_days WHERE tenant_id = 't1') "
                "+ (SELECT count(*) FROM experiment_requests WHERE tenant_id = 't1') "
                "+ (SELECT count(*) FROM experiment_pending_outcomes WHERE tenant_id = 't1')"
            )
        ).scalar()
    assert left == 0
    assert_same(*both(engine, tenant="t2"))


def test_truncate_empties_the_rollup(engine):
    write(engine, SCENARIO)
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE interaction_events"))
        assert conn.execute(text("SELECT count(*) FROM experiment_user_days")).scalar() == 0
    rollup, raw = both(engine)
    assert rollup.arms == raw.arms == ()


def test_concurrent_exposure_and_click_are_attributed_once(engine):
    """A click committed while the exposure's transaction waits on the request row still counts."""
    exposure = ev("z1", "exposure", "u1", "rz", "e1", "baseline", when=at(2))
    click = ev("z2", "click", "u1", "rz", when=at(2.1))
    stmt = insert(InteractionEvent).on_conflict_do_nothing(constraint="uq_interaction_events_tenant_event")
    second_pid: list[int] = []
    done = threading.Event()

    def second():
        with engine.begin() as conn2:
            second_pid.append(conn2.execute(text("SELECT pg_backend_pid()")).scalar())
            conn2.execute(stmt.values([exposure]))  # waits for the click's row lock
        done.set()

    def blockers() -> list[int]:  # whom the second transaction waits for, from Postgres's lock manager
        if not second_pid:
            return []
        with engine.connect() as conn3:
            return conn3.execute(text("SELECT pg_blocking_pids(:p)"), {"p": second_pid[0]}).scalar()

    with engine.begin() as conn1:
        conn1.execute(stmt.values([click]))
        first_pid = conn1.execute(text("SELECT pg_backend_pid()")).scalar()
        worker = threading.Thread(target=second)
        worker.start()
        wait_for(lambda: first_pid in blockers(), 10, 0.05, what="the exposure to wait on the click's transaction")
        assert not done.is_set()  # blocked on experiment_requests (tenant, rz, u1) until conn1 commits
    worker.join(10)
    assert done.is_set()
    rollup, raw = both(engine)
    assert rollup == raw and rollup.arm("baseline").clicks == 1


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_traffic_rollup_equals_raw(engine, seed):
    events = random_events(seed)
    rng = random.Random(seed)
    i = 0
    while i < len(events):  # batches of random size, as the agent's buffer would deliver
        size = rng.choice([1, 5, 40, 200])
        write(engine, events[i : i + size])
        i += size
    for key in ("e1", "e2"):
        rollup, raw = both(engine, key=key, start=START - timedelta(hours=1))
        assert_same(rollup, raw)  # bit for bit: the loader sums money and ratios as numeric
        assert rollup.arms and rollup.daily
