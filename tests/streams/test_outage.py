"""Outage or bad data: the classification on errors the real Postgres raises, and waiting an outage out."""

from __future__ import annotations

import asyncio
import json

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from db.session import create_db_engine
from streams.embedded_broker import free_port
from streams.outage import DatabaseHealth, failure_reason, is_outage, is_transient, wait_out_outages

pytestmark = pytest.mark.integration


def raised(engine, sql: str, params: dict | None = None) -> DBAPIError:
    """The error `sql` raises on `engine` (autocommit, one connection)."""
    with pytest.raises(DBAPIError) as info, engine.connect() as conn:
        conn.execute(text(sql), params or {})
    return info.value


@pytest.fixture
def refused() -> DBAPIError:
    """What connecting to a Postgres that is not there raises: nothing listens on the port."""
    engine = create_db_engine(f"postgresql://vitrine@127.0.0.1:{free_port()}/vitrine")
    try:
        return raised(engine, "SELECT 1")
    finally:
        engine.dispose()


def test_errors_of_the_data_are_not_outages(db_engine):
    underflow = raised(db_engine, "SELECT exp(-1e4::float8)")  # the #13 popularity decay
    duplicate = raised(db_engine, "CREATE TEMP TABLE t (x int PRIMARY KEY); INSERT INTO t VALUES (1), (1)")
    bad_json = raised(db_engine, "SELECT CAST(:j AS jsonb)", {"j": '{"x": "\\u0000"}'})
    for error in (underflow, duplicate, bad_json):
        assert not is_outage(error) and not is_transient(error), error


def test_a_refused_connection_and_a_terminated_session_are_outages(db_engine, refused):
    assert is_outage(refused) and not is_transient(refused)
    with db_engine.connect() as victim, db_engine.connect() as admin:
        pid = victim.execute(text("SELECT pg_backend_pid()")).scalar()
        admin.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        with pytest.raises(DBAPIError) as info:
            victim.execute(text("SELECT 1"))
    assert is_outage(info.value)  # 57P01 admin_shutdown: what a stopping server sends its sessions


def test_a_lost_lock_race_is_transient_not_an_outage(db_engine):
    with db_engine.connect() as holder:
        holder.execute(text("CREATE TABLE locked (x int); INSERT INTO locked VALUES (1)"))
        holder.commit()
        holder.execute(text("SELECT * FROM locked FOR UPDATE"))
        error = raised(db_engine, "SELECT * FROM locked FOR UPDATE NOWAIT")  # 55P03 lock_not_available
    assert is_transient(error) and not is_outage(error)


def test_a_failure_reason_holds_the_drivers_message_not_the_statement_or_its_parameters(db_engine):
    error = raised(db_engine, "SELECT exp(-1e4::float8) WHERE :other_tenant = 'globex:u-9'", {"other_tenant": "x"})
    reason = failure_reason(error)
    assert reason == "NumericValueOutOfRange: value out of range: underflow"
    assert "globex" not in reason and "SELECT" not in reason


def test_an_outage_is_waited_out_and_the_health_follows_it(refused):
    health = DatabaseHealth()
    calls: list[bool | None] = []

    async def flaky():
        calls.append(health.down_since is not None)
        if len(calls) < 3:
            raise refused
        return "done"

    assert asyncio.run(wait_out_outages(flaky, health)) == "done"
    assert calls == [False, True, True]  # down from the first failure on, for as long as it lasted
    assert health.down_since is None and REGISTRY.get_sample_value("vitrine_worker_database_up") == 1

    async def bad_data():
        calls.append(None)
        raise ValueError("not an outage")

    with pytest.raises(ValueError):
        asyncio.run(wait_out_outages(bad_data, health))
    assert calls[-2:] == [True, None]  # raised at once, not retried


def test_process_batch_waits_out_an_outage_and_dead_letters_nothing(refused, monkeypatch):
    """The ingest agent's batch: while every write fails with an outage the batch is retried (beyond
    MAX_ATTEMPTS), never dead-lettered; once the database answers, every event is indexed once."""
    from core.contracts import ProductIndexed
    from streams.worker import MAX_ATTEMPTS, process_batch

    class DownForAWhile:  # the Indexer's contract: one result per event, exceptions as results
        calls = 0

        async def handle_batch(self, events, on_result):
            self.calls += 1
            if self.calls <= MAX_ATTEMPTS + 1:
                return [refused] * len(events)
            notices = [
                ProductIndexed(
                    tenant_id=e.tenant_id, product_id=e.product.id, version=1, event_id=e.event_id, status="indexed"
                )
                for e in events
            ]
            for i, n in enumerate(notices):
                await on_result(i, n)
            return notices

    monkeypatch.setattr("streams.outage.OUTAGE_MAX_WAIT_S", 0.2)  # keep the test short; the rule is the same
    published, letters = [], []

    async def publish(key, notice):
        published.append(key)

    async def dead_letter(*args):
        letters.append(args)

    event = {"event_id": "e1", "tenant_id": "acme", "type": "product.upserted", "product": {"id": "p1", "version": 1}}
    indexer, health = DownForAWhile(), DatabaseHealth()
    asyncio.run(process_batch(indexer, [(b"acme:p1", json.dumps(event).encode())], publish, dead_letter, health))
    assert letters == [] and published == [b"acme:p1"] and indexer.calls == MAX_ATTEMPTS + 2
    assert health.down_since is None
