"""Event receipts on the real Postgres: an id is a duplicate only once acknowledged; a dead claim is re-claimed."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text

from db import receipts
from db.tenants import create_tenant
from tests.helpers import wait_for

pytestmark = pytest.mark.integration

LEASE_S = 30.0


@pytest.fixture
def tenant(sessions) -> str:
    with sessions.begin() as s:
        return create_tenant(s, "Acme", "acme").tenant_id


def claim(sessions, tenant, ids, lease_s=LEASE_S) -> receipts.Claim:
    with sessions.begin() as s:
        return receipts.claim(s, tenant, ids, lease_s)


def age_claims(sessions, seconds: float) -> None:
    """Move every claim into the past, as if its request had started `seconds` ago."""
    with sessions.begin() as s:
        s.execute(text("UPDATE event_receipts SET claimed_at = claimed_at - make_interval(secs => :s)"), {"s": seconds})


def test_an_id_is_a_duplicate_only_once_kafka_acknowledged_it(sessions, tenant):
    first = claim(sessions, tenant, ["e1", "e2", "e1"])
    assert first.new == {"e1", "e2"} and first.in_flight == {} and first.token is not None
    with sessions.begin() as s:
        receipts.mark_acked(s, tenant, {"e1"})

    again = claim(sessions, tenant, ["e1", "e2", "e3"])
    # e1: acknowledged, a duplicate (neither new nor in flight); e2: claimed by the first request, not
    # acknowledged yet, its lease running; e3: new.
    assert again.new == {"e3"}
    assert set(again.in_flight) == {"e2"} and LEASE_S - 5 < again.in_flight["e2"] <= LEASE_S
    assert again.retry_after_s == pytest.approx(LEASE_S, abs=5)

    age_claims(sessions, LEASE_S + 1)  # the first request died before Kafka's ack: its lease ran out
    third = claim(sessions, tenant, ["e1", "e2"])
    assert third.new == {"e2"} and third.in_flight == {}


def test_release_forgets_only_its_own_unacknowledged_claim(sessions, tenant):
    mine = claim(sessions, tenant, ["a", "b"])
    with sessions.begin() as s:
        receipts.mark_acked(s, tenant, {"a"})
        receipts.release(s, tenant, mine.new, mine.token)  # the produce of b failed
    assert claim(sessions, tenant, ["a", "b"]).new == {"b"}  # a stays acknowledged, b is accepted again

    age_claims(sessions, LEASE_S + 1)
    theirs = claim(sessions, tenant, ["b"])  # a later request re-claimed the expired b
    assert theirs.new == {"b"} and theirs.token != mine.token
    with sessions.begin() as s:
        receipts.release(s, tenant, {"b"}, mine.token)  # the slow first request gives up late
    assert set(claim(sessions, tenant, ["b"]).in_flight) == {"b"}  # the later claim still holds


def test_tenants_have_their_own_ids(sessions, tenant):
    with sessions.begin() as s:
        other = create_tenant(s, "Other", "other").tenant_id
    assert claim(sessions, tenant, ["x"]).new == {"x"}
    assert claim(sessions, other, ["x"]).new == {"x"}


def test_concurrent_claims_of_one_id_give_it_to_exactly_one_request(sessions, db_engine, tenant):
    results = {}
    first = sessions()
    first.begin()
    results["first"] = receipts.claim(first, tenant, ["e1"], LEASE_S)  # uncommitted: holds the row

    def second():
        results["second"] = claim(sessions, tenant, ["e1"])

    thread = threading.Thread(target=second)
    thread.start()
    # The second request's insert waits for the first's row lock (not a race won by timing).
    wait_for(lambda: _blocked_backends(db_engine) == 1, 10, interval_s=0.02, what="the second claim to block")
    first.commit()
    first.close()
    thread.join(10)
    assert results["first"].new == {"e1"}
    assert results["second"].new == set() and set(results["second"].in_flight) == {"e1"}


def _blocked_backends(engine) -> int:
    with engine.connect() as conn:
        return conn.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND cardinality(pg_blocking_pids(pid)) > 0"
            )
        )
