"""The rollup tests' data: events written the way real writers write them, and the tenants they belong to.

`SCENARIO` is hand-made (every case the attribution rules distinguish, out of order); `random_events`
adds random traffic with every wrinkle. test_rollup.py checks the rollup on them; the snapshot and
migration tests reuse them.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.dialects.postgresql import insert

from db.models import InteractionEvent

START = datetime(2026, 3, 2, 6, 30, tzinfo=UTC)  # not midnight: sub-day bounds


def at(hours: float) -> datetime:
    return START + timedelta(hours=hours)


def ev(eid, type_, user, request, experiment=None, arm=None, value=None, when=START, tenant="t1"):
    return {
        "tenant_id": tenant,
        "event_id": eid,
        "type": type_,
        "user_id": user,
        "request_id": request,
        "product_id": "p1",
        "experiment": experiment,
        "arm": arm,
        "value": value,
        "payload": {},
        "occurred_at": when,
    }


def write(engine, events, batch: int | None = None) -> None:
    """Insert like the interactions agent: multi-row INSERT .. ON CONFLICT DO NOTHING, one transaction per batch."""
    batch = batch or max(len(events), 1)
    for i in range(0, len(events), batch):
        with engine.begin() as conn:
            conn.execute(
                insert(InteractionEvent)
                .values(events[i : i + batch])
                .on_conflict_do_nothing(constraint="uq_interaction_events_tenant_event")
            )


def setup_tenants(engine, *, started_at=START, stopped_at=None) -> None:
    with engine.begin() as conn:
        for tid in ("t1", "t2"):
            conn.execute(
                text(
                    "INSERT INTO tenants (id, name, storefront_key_hash, admin_key_hash, webhook_secret, default_arm) "
                    "VALUES (:id, :name, :s, :a, 'x', 'baseline')"
                ),
                {"id": tid, "name": tid, "s": "s" + tid, "a": "a" + tid},
            )
        for key in ("e1", "e2"):
            conn.execute(
                text(
                    "INSERT INTO experiments (tenant_id, key, placement, status, arms, traffic_fraction, salt, "
                    "hash_version, primary_metric, guardrails, started_at, stopped_at) VALUES ('t1', :k, 'similar', "
                    "'running', CAST(:arms AS jsonb), 1.0, :k, 1, 'ctr', '[]'::jsonb, :start, :stop)"
                ),
                {
                    "k": key,
                    "start": started_at,
                    "stop": stopped_at,
                    "arms": json.dumps([{"name": "baseline", "weight": 0.5}, {"name": "visual", "weight": 0.5}]),
                },
            )


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
                add(
                    kind,
                    user,
                    rng.choice([None, f"pre{u}"]),
                    value=rng.randint(1, 40) * 0.25 if kind == "purchase" else None,
                    when=at(-rng.uniform(0.5, 300)),
                )
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
                add(
                    kind,
                    who,
                    request if rng.random() < 0.9 else None,
                    rng.choice([None, key]),
                    value=rng.choice([None, rng.randint(1, 400) * 0.25]) if kind == "purchase" else None,
                    when=at(t + rng.uniform(-0.4, 30)),
                )
    dupes = rng.sample(events, len(events) // 10)  # redelivered, some with other contents
    events += [dict(e, value=99.0) for e in dupes]
    rng.shuffle(events)
    return events
