"""The rollup (migration 0005) against the raw-event SQL: same events, same ExperimentStats.

The raw path (`source="raw"`) is the reference: it is what test_loader.py checks by hand.
Every scenario here seeds events the way real writers do (multi-row INSERT .. ON CONFLICT DO
NOTHING, in batches, in any order) and asserts that the rollup gives the same numbers.
The comparison is exact (dataclass equality): the loader sums money and per-user ratios as
numeric, so neither the path nor the order rows reach an aggregate changes a bit.
"""

from __future__ import annotations

import json
import random
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert

from db.models import InteractionEvent
from experiments.loader import (
    Attribution,
    load_arm_stats,
    load_daily_stats,
    load_experiment_stats,
    rollup_exact,
)
from experiments.stats import ExperimentStats

pytestmark = pytest.mark.integration

START = datetime(2026, 3, 2, 6, 30, tzinfo=timezone.utc)  # not midnight: sub-day bounds


def at(hours: float) -> datetime:
    return START + timedelta(hours=hours)


def ev(eid, type_, user, request, experiment=None, arm=None, value=None, when=START, tenant="t1"):
    return dict(tenant_id=tenant, event_id=eid, type=type_, user_id=user, request_id=request,
                product_id="p1", experiment=experiment, arm=arm, value=value, payload={}, occurred_at=when)


def write(engine, events, batch: int | None = None) -> None:
    """Insert like the interactions agent: multi-row INSERT .. ON CONFLICT DO NOTHING, one transaction per batch."""
    batch = batch or max(len(events), 1)
    for i in range(0, len(events), batch):
        with engine.begin() as conn:
            conn.execute(insert(InteractionEvent).values(events[i:i + batch])
                         .on_conflict_do_nothing(constraint="uq_interaction_events_tenant_event"))


def setup_tenants(engine, *, started_at=START, stopped_at=None) -> None:
    with engine.begin() as conn:
        for tid in ("t1", "t2"):
            conn.execute(text(
                "INSERT INTO tenants (id, name, storefront_key_hash, admin_key_hash, webhook_secret, default_arm) "
                "VALUES (:id, :name, :s, :a, 'x', 'baseline')"), {"id": tid, "name": tid, "s": "s" + tid, "a": "a" + tid})
        for key in ("e1", "e2"):
            conn.execute(text(
                "INSERT INTO experiments (tenant_id, key, placement, status, arms, traffic_fraction, salt, "
                "hash_version, primary_metric, guardrails, started_at, stopped_at) VALUES ('t1', :k, 'similar', "
                "'running', CAST(:arms AS jsonb), 1.0, :k, 1, 'ctr', '[]'::jsonb, :start, :stop)"),
                {"k": key, "start": started_at, "stop": stopped_at,
                 "arms": json.dumps([{"name": "baseline", "weight": 0.5}, {"name": "visual", "weight": 0.5}])})


def assert_same(rollup: ExperimentStats, raw: ExperimentStats) -> None:
    """Equal ExperimentStats, daily series included; the arm lists first for a readable failure."""
    assert [a.arm for a in rollup.arms] == [a.arm for a in raw.arms]
    assert rollup == raw


def both(engine, key="e1", tenant="t1", **bounds) -> tuple[ExperimentStats, ExperimentStats]:
    """(rollup, raw) totals with the daily series, for the same bounds."""
    with engine.connect() as conn:
        rollup = load_arm_stats(conn, tenant, key, source="rollup", **bounds).with_daily(
            load_daily_stats(conn, tenant, key, source="rollup", **bounds))
        raw = load_arm_stats(conn, tenant, key, source="raw", **bounds).with_daily(
            load_daily_stats(conn, tenant, key, source="raw", **bounds))
    return rollup, raw


# Hand-made scenario: every case the attribution rules distinguish, arriving out of order.
SCENARIO = [
    # u1 baseline: r1 exposure + 2 clicks, r2 exposure + purchase 20.25 (next day, after midnight)
    ev("a1", "exposure", "u1", "r1", "e1", "baseline", when=at(1)),
    ev("a2", "click", "u1", "r1", when=at(1.1)),
    ev("a3", "click", "u1", "r1", "e1", "baseline", when=at(1.2)),
    ev("a4", "exposure", "u1", "r2", "e1", "baseline", when=at(17)),
    ev("a5", "purchase", "u1", "r2", "e1", "baseline", 20.25, when=at(18)),
    # u2 baseline: exposure without request id (counts), a purchase without request id (never, in
    # request mode), a click stamped 30 min before its exposure (clock skew, within the 1 h slack)
    ev("b1", "exposure", "u2", None, "e1", "baseline", when=at(2)),
    ev("b2", "purchase", "u2", None, None, None, 5.0, when=at(3)),
    ev("b3", "exposure", "u2", "r3", "e1", "baseline", when=at(26)),
    ev("b4", "click", "u2", "r3", when=at(25.5)),
    # u3 visual: 4 exposures over 3 days, clicks on two requests, purchase with NULL value,
    # add_to_cart (never counted), pre-period purchase 30.5 and pre-period click
    ev("c1", "exposure", "u3", "r4", "e1", "visual", when=at(0.5)),
    ev("c2", "exposure", "u3", "r4", "e1", "visual", when=at(0.6)),
    ev("c3", "exposure", "u3", "r5", "e1", "visual", when=at(30)),
    ev("c4", "exposure", "u3", "r6", "e1", "visual", when=at(50)),
    ev("c5", "click", "u3", "r5", when=at(30.2)),
    ev("c6", "click", "u3", "r6", when=at(51)),
    ev("c7", "purchase", "u3", "r6", None, None, None, when=at(52)),
    ev("c8", "add_to_cart", "u3", "r6", when=at(51.5)),
    ev("c9", "purchase", "u3", None, None, None, 30.5, when=at(-72)),
    ev("c10", "click", "u3", "old", None, None, None, when=at(-100)),
    # a click carrying u3's request id from another user: never attributed
    ev("c11", "click", "u9", "r4", when=at(0.7)),
    # u4 visual: purchases 10.5 + 15.75 on r7; a pre-period purchase of 4 (CUPED)
    ev("d1", "exposure", "u4", "r7", "e1", "visual", when=at(5)),
    ev("d2", "purchase", "u4", "r7", None, None, 10.5, when=at(5.5)),
    ev("d3", "purchase", "u4", "r7", None, None, 15.75, when=at(29)),
    ev("d4", "purchase", "u4", "x", None, None, 4.0, when=at(-30)),
    # u5 exposed to both arms: multi-arm, excluded and counted
    ev("e1", "exposure", "u5", "r8", "e1", "baseline", when=at(3)),
    ev("e2", "exposure", "u5", "r9", "e1", "visual", when=at(4)),
    ev("e3", "click", "u5", "r9", when=at(4.1)),
    # u6: an exposure with no experiment (not in any experiment) and a click on it
    ev("f1", "exposure", "u6", "r10", None, None, when=at(6)),
    ev("f2", "click", "u6", "r10", when=at(6.1)),
    # e2 (another experiment) and t2 (another tenant) share user and request names
    ev("g1", "exposure", "u1", "r11", "e2", "visual", when=at(7)),
    ev("g2", "click", "u1", "r11", when=at(7.5)),
    ev("g3", "exposure", "u1", "r1", "e1", "visual", when=at(1), tenant="t2"),
    ev("g4", "click", "u1", "r1", when=at(1.1), tenant="t2"),
]


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
    write(engine, SCENARIO + [
        ev("h1", "exposure", "u7", "r20", "e1", "baseline", when=at(-3)),  # before the start
        ev("h2", "click", "u7", "r20", when=at(-4.5)),  # skewed: before the exposure
    ])
    with engine.connect() as conn:
        assert not rollup_exact(conn, "t1", "e1", START)
        assert rollup_exact(conn, "t1", "e1", START - timedelta(hours=5))
        with pytest.raises(ValueError, match="cannot answer"):
            load_arm_stats(conn, "t1", "e1", start=START, source="rollup")
        auto = load_arm_stats(conn, "t1", "e1", start=START).with_daily(
            load_daily_stats(conn, "t1", "e1", start=START))
        raw = load_arm_stats(conn, "t1", "e1", start=START, source="raw").with_daily(
            load_daily_stats(conn, "t1", "e1", start=START, source="raw"))
        end = at(40)  # stops before u3's last exposure
        assert not rollup_exact(conn, "t1", "e1", None, end)
        auto_end = load_arm_stats(conn, "t1", "e1", end=end)
        raw_end = load_arm_stats(conn, "t1", "e1", end=end, source="raw")
        # every exposure is in bounds, but an attributed outcome (u7's click) is before start - 1 h
        assert not rollup_exact(conn, "t1", "e1", START - timedelta(hours=3))
        floor = START - timedelta(hours=3)
        assert load_arm_stats(conn, "t1", "e1", start=floor) == load_arm_stats(conn, "t1", "e1", start=floor,
                                                                               source="raw")
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
        left = conn.execute(text(
            "SELECT (SELECT count(*) FROM experiment_user_days WHERE tenant_id = 't1') "
            "+ (SELECT count(*) FROM experiment_requests WHERE tenant_id = 't1') "
            "+ (SELECT count(*) FROM experiment_pending_outcomes WHERE tenant_id = 't1')")).scalar()
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
    done = threading.Event()

    def second():
        with engine.begin() as conn2:
            conn2.execute(stmt.values([exposure]))  # waits for the click's row lock
        done.set()

    with engine.begin() as conn1:
        conn1.execute(stmt.values([click]))
        worker = threading.Thread(target=second)
        worker.start()
        time.sleep(0.5)
        assert not done.is_set()  # blocked on experiment_requests (tenant, rz, u1)
    worker.join(10)
    assert done.is_set()
    rollup, raw = both(engine)
    assert rollup == raw and rollup.arm("baseline").clicks == 1


def random_events(seed: int, n_users: int = 60) -> list[dict]:
    """Random traffic with every wrinkle: multi-arm users, duplicates, skew, cross-midnight outcomes."""
    rng = random.Random(seed)
    events: list[dict] = []
    k = 0

    def add(*args, **kw):
        nonlocal k
        k += 1
        events.append(ev(f"x{k}", *args, **kw))

    for u in range(n_users):
        user = f"u{u}"
        arm = "visual" if u % 2 else "baseline"
        if rng.random() < 0.5:  # pre-period activity
            for _ in range(rng.randint(1, 3)):
                kind = rng.choice(["click", "purchase", "add_to_cart", "exposure"])
                add(kind, user, rng.choice([None, f"pre{u}"]), value=rng.randint(1, 40) * 0.25 if kind == "purchase"
                    else None, when=at(-rng.uniform(0.5, 300)))
        for q in range(rng.randint(1, 6)):
            request = rng.choice([f"r{u}-{q}", f"r{u}-{q}", None])
            key = "e1" if rng.random() < 0.85 else "e2"
            shown = arm if rng.random() < 0.97 else ("baseline" if arm == "visual" else "visual")
            t = rng.uniform(0, 24 * 9)
            for _ in range(rng.choice([1, 1, 2, 4])):
                add("exposure", user, request, key, shown, when=at(t + rng.uniform(0, 0.2)))
            for _ in range(rng.choice([0, 0, 1, 2, 3])):
                kind = rng.choice(["click", "click", "purchase", "add_to_cart"])
                who = user if rng.random() < 0.95 else f"u{rng.randrange(n_users)}"
                add(kind, who, request if rng.random() < 0.9 else None, rng.choice([None, key]),
                    value=rng.choice([None, rng.randint(1, 400) * 0.25]) if kind == "purchase" else None,
                    when=at(t + rng.uniform(-0.4, 30)))
    dupes = rng.sample(events, len(events) // 10)  # redelivered, some with other contents
    events += [dict(e, value=99.0) for e in dupes]
    rng.shuffle(events)
    return events


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_traffic_rollup_equals_raw(engine, seed):
    events = random_events(seed)
    rng = random.Random(seed)
    i = 0
    while i < len(events):  # batches of random size, as the agent's buffer would deliver
        size = rng.choice([1, 5, 40, 200])
        write(engine, events[i:i + size])
        i += size
    for key in ("e1", "e2"):
        rollup, raw = both(engine, key=key, start=START - timedelta(hours=1))
        assert_same(rollup, raw)  # bit for bit: the loader sums money and ratios as numeric
        assert rollup.arms and rollup.daily
