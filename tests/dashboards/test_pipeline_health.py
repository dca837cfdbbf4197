"""The pipeline page says when the database or the broker is unreachable, since when, and when all is healthy.

Outages are real: the test's database refuses connections (`ALLOW_CONNECTIONS false`, its backends
ended), the broker address is a port nobody listens on. The worker is another process: its /metrics/
page is played by a small HTTP server (the process edge).
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from dashboards.ui import duration_text, outage_lines
from db.session import create_db_engine
from streams.embedded_broker import free_port
from tests.dashboards.helpers import page, texts

NOW = datetime(2026, 12, 4, 14, 5, 11, tzinfo=UTC)
DOWN_AT = datetime(2026, 12, 4, 14, 2, 11, tzinfo=UTC).timestamp()


def test_outage_lines_name_each_outage_and_since_when():
    ok = {"ok": True, "error": None, "since": None, "clock": "dashboard"}
    assert outage_lines({"database": ok, "broker": ok, "worker_waiting_since": None}, NOW) == [
        ("success", "healthy: the database and the broker answer")
    ]
    db_down = {
        "ok": False,
        "error": "OperationalError: no connection or no answer",
        "since": DOWN_AT,
        "clock": "worker",
    }
    broker_down = {"ok": False, "error": "no bootstrap server accepts connections", "since": DOWN_AT - 86400}
    lines = outage_lines(
        {"database": db_down, "broker": broker_down | {"clock": "dashboard"}, "worker_waiting_since": DOWN_AT}, NOW
    )
    assert lines == [
        (
            "error",
            "database unreachable since 14:02:11 UTC (3 min; the worker's clock): "
            "OperationalError: no connection or no answer",
        ),
        (
            "error",
            "broker unreachable since 2026-12-03 14:02:11 UTC (1 d 0 h; first seen by this dashboard): "
            "no bootstrap server accepts connections",
        ),
        ("info", "the worker holds its partitions meanwhile: nothing is dead-lettered for the outage"),
    ]
    # Postgres answers the dashboard again, the worker has not noticed yet.
    lines = outage_lines({"database": ok, "broker": ok, "worker_waiting_since": DOWN_AT}, NOW)
    assert lines[0] == ("warning", "worker waiting for the database since 14:02:11 UTC (3 min; the worker's clock)")
    assert [duration_text(s) for s in (0, 59, 60, 3599, 3600 + 300, 86400 * 2 + 7200)] == [
        "0 s",
        "59 s",
        "1 min",
        "59 min",
        "1 h 5 min",
        "2 d 2 h",
    ]


def _allow_connections(postgres, database_url: str, allowed: bool) -> None:
    name = make_url(database_url).database
    engine = create_db_engine(postgres.admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}'))
            if not allowed:
                conn.execute(
                    text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name}
                )
    finally:
        engine.dispose()


@pytest.fixture
def worker_metrics(monkeypatch):
    """A worker /metrics/ page saying it has waited for the database for 3 minutes; its port set for the app."""
    since = int(time.time()) - 180
    body = f"vitrine_worker_database_up 0.0\nvitrine_worker_database_down_since_seconds {since}\n".encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - stdlib name
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("VITRINE_WORKER_WEB_PORT", str(server.server_address[1]))
    yield datetime.fromtimestamp(since, UTC)
    server.shutdown()
    server.server_close()


@pytest.mark.integration
def test_the_pipeline_page_says_the_database_is_unreachable_since_the_workers_clock(
    seeded, settings, postgres, worker_metrics
):
    import streamlit as st

    from dashboards import data

    _allow_connections(postgres, settings.database_url, False)
    try:
        at = page("pipeline")
        assert not at.exception, at.exception
        line = at.error[0].value
        assert line.startswith("database unreachable since ")
        assert f"{worker_metrics:%H:%M:%S} UTC (3 min; the worker's clock): OperationalError" in line
        assert "nothing is dead-lettered" in texts(at)
        assert "Cannot read the catalog" in texts(at)  # the counts below still say why they are missing
    finally:
        _allow_connections(postgres, settings.database_url, True)
    data.engine(settings.database_url).dispose()  # its connections were ended with the backends
    st.cache_data.clear()
    at = page("pipeline")
    assert not at.exception, at.exception
    assert at.warning[0].value.startswith("worker waiting for the database since")  # the worker still says so
    assert "Products indexed: 12" in texts(at)


@pytest.mark.integration
def test_the_pipeline_page_says_the_broker_is_unreachable_and_then_healthy(seeded, settings, monkeypatch):
    import streamlit as st

    monkeypatch.setenv("VITRINE_WORKER_WEB_PORT", str(free_port()))  # no worker running: no worker line
    monkeypatch.setenv("VITRINE_KAFKA_BOOTSTRAP", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("VITRINE_KAFKA_ACK_TIMEOUT_S", "1")  # the Kafka section's own read gives up sooner
    at = page("pipeline")
    assert not at.exception, at.exception
    first = at.error[0].value
    assert first.startswith("broker unreachable since ") and "; first seen by this dashboard)" in first
    assert "no bootstrap server accepts connections" in first
    st.cache_data.clear()
    time.sleep(1)
    again = page("pipeline").error[0].value
    assert again.split(" (")[0] == first.split(" (")[0]  # the same outage: the same start

    monkeypatch.setenv("VITRINE_KAFKA_BOOTSTRAP", settings.kafka_bootstrap)
    st.cache_data.clear()
    at = page("pipeline")
    assert not at.exception, at.exception
    assert [s.value for s in at.success] == ["healthy: the database and the broker answer"]
    assert not at.error
