"""Restarting `vitrine up` with events unconsumed loses and duplicates nothing (the durable embedded broker).

The issue's reproduction: worker stopped, products sent (202), `vitrine up` restarted: none was
ever indexed (the broker kept them in memory), their retries were answered `duplicates`, and the
broker came back on another port, so the running API answered 503 until restarted.
"""

from __future__ import annotations

import json
import logging
import signal
import time
import uuid
from collections import Counter

import pytest
from kafka import KafkaConsumer
from sqlalchemy import text

from db.session import create_db_engine, session_factory
from db.tenants import create_tenant
from streams.embedded_broker import free_port, port_open
from streams.topics import PRODUCT_INDEXED
from tests.helpers import wait_for
from tests.vitrine.helpers import alive, start_up
from vitrine import procs
from vitrine.client import CatalogClient
from vitrine.sample_catalog import sample_event

pytestmark = pytest.mark.integration
log = logging.getLogger(__name__)

N = 20


def test_restarting_up_with_events_unconsumed_loses_and_duplicates_nothing(
    state_dir, models_dir, image_server, sample_images, tmp_path
):
    data = state_dir / f"durable-{uuid.uuid4().hex[:8]}"  # pgserver needs a project-owned dir (tests/conftest.py)
    data.mkdir()
    (data / "models").symlink_to(models_dir)
    api_port = free_port()
    env = {
        "VITRINE_DATA_DIR": str(data),
        "VITRINE_KAFKA_BOOTSTRAP": "",
        "VITRINE_DATABASE_URL": "",
        "VITRINE_KAFKA_PORT": "0",
        "VITRINE_BROKER_STORAGE": "durable",
        "VITRINE_API_PORT": str(api_port),
        "VITRINE_WORKER_WEB_PORT": str(free_port()),
        "VITRINE_FETCH_ALLOW_HOSTS": "127.0.0.1",
    }
    samples = sample_images[1]
    events = [
        sample_event(samples[i % len(samples)], "acme", image_server.base_url, event_id=f"e{i}") for i in range(N + 1)
    ]
    for i, e in enumerate(events):
        e["product"]["id"] = f"p{i}"
    started, engine = [], None
    up, _ = start_up(env)
    try:
        stack = json.loads((data / "stack.json").read_text())
        engine = create_db_engine(stack["database_url"])
        with session_factory(engine).begin() as s:
            acme = create_tenant(s, "Acme", "acme")
        api = procs.spawn(["api"], env, tmp_path / "api.log")
        started.append(api)
        base = f"http://127.0.0.1:{api_port}"
        procs.wait_http(f"{base}/healthz", api, timeout_s=90, log_path=tmp_path / "api.log")
        client = CatalogClient(base, "acme", acme.webhook_secret)
        sent = client.send(events[:N])  # no worker runs: all N stay unconsumed in the broker
        assert sent.status_code == 202 and sorted(sent.json()["accepted"]) == sorted(e["event_id"] for e in events[:N])

        engine.dispose()
        t0 = time.monotonic()
        up.send_signal(signal.SIGTERM)
        assert up.wait(30) == 0
        stopped_s = time.monotonic() - t0
        broker_port = int(stack["kafka_bootstrap"].rsplit(":", 1)[1])
        assert not port_open("127.0.0.1", broker_port)
        t0 = time.monotonic()
        up, out = start_up(env)
        started_s = time.monotonic() - t0
        # Same port, recorded in the data dir: the API started before the restart reaches it again.
        assert json.loads((data / "stack.json").read_text())["kafka_bootstrap"] == stack["kafka_bootstrap"]
        assert "durable" in out

        worker_at = time.monotonic()
        worker = procs.spawn(["worker"], env, tmp_path / "worker.log")
        started.append(worker)
        # The running API (not restarted) accepts a new product once its connections are back.
        later = wait_for(
            lambda: (r := client.send(events[N])).status_code == 202 and r,
            30,
            interval_s=0.5,
            what="the running API to accept again after the restart",
        )
        assert later.json() == {"accepted": [events[N]["event_id"]], "duplicates": []}
        # A retry of the first N is answered `duplicates`, now truthfully: they are in the broker.
        assert client.send(events[:N]).json()["duplicates"] == sorted(e["event_id"] for e in events[:N])

        sessions = session_factory(engine)
        wait_for(
            lambda: _count(sessions, "SELECT count(*) FROM products WHERE indexed_at IS NOT NULL") == N + 1,
            120,
            what=f"all {N + 1} products indexed after the restart",
        )
        log.info(
            "vitrine up stopped in %.1f s, started again in %.1f s; all %d products indexed %.1f s after "
            "the worker was started",
            stopped_s,
            started_s,
            N + 1,
            time.monotonic() - worker_at,
        )
        assert _count(sessions, "SELECT count(*) FROM products") == N + 1
        notices = _indexed_notices(stack["kafka_bootstrap"])
        assert notices == Counter({f"p{i}": 1 for i in range(N + 1)})  # each indexed once, none lost
        assert worker.poll() is None and api.poll() is None
        client.close()
    finally:
        for proc in reversed(started):
            procs.stop(proc)
        if engine is not None:
            engine.dispose()
        up.send_signal(signal.SIGTERM)
        assert up.wait(30) == 0
    assert not any(
        alive(int(p["pid"])) for p in json.loads((data / "broker" / "state.json").read_text()).get("pids", {}).values()
    )


def _count(sessions, sql: str) -> int:
    with sessions() as s:
        return s.scalar(text(sql))


def _indexed_notices(bootstrap: str) -> Counter:
    consumer = KafkaConsumer(
        PRODUCT_INDEXED.name, bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=3000
    )
    notices = [json.loads(m.value) for m in consumer]
    consumer.close()
    return Counter(n["product_id"] for n in notices if n["status"] == "indexed")
