"""The Kafka side of `vitrine status` and the pipeline page: worker lag and dead letters, probed without raising;
and the worker's own view of the database (its /metrics/ gauges, streams/outage.py).
"""

from __future__ import annotations

import urllib.request
from datetime import UTC, datetime

from kafka.errors import KafkaError
from prometheus_client.parser import text_string_to_metric_families

from core.settings import Settings
from streams.dead_letters import iter_dead_letters
from streams.lag import consumer_lag
from streams.sync_producer import BrokerUnreachable
from streams.topics import PRODUCT_EVENTS


def kafka_status(settings: Settings) -> dict:
    """Worker lag and dead letters (total and per tenant); `reachable: false` with the reason instead of failing."""
    events = settings.topic(PRODUCT_EVENTS.name)
    out = {
        "reachable": False,
        "group": settings.app_id,
        "topic": events,
        "lag": None,
        "lag_error": None,
        "dead_letters": None,
        "dead_letters_by_tenant": {},
        "error": None,
    }
    try:
        # Counted by reading, not from offsets (Tansu's end offsets are not high watermarks). Reading
        # first also probes the broker with a short timeout: the lag helper's admin client waits 30 s.
        by_tenant: dict[str, int] = {}
        total = 0
        for record in iter_dead_letters(settings):
            total += 1
            by_tenant[record.tenant_id or "?"] = by_tenant.get(record.tenant_id or "?", 0) + 1
        out["dead_letters"], out["dead_letters_by_tenant"] = total, by_tenant
        out["reachable"] = True
        try:
            out["lag"] = consumer_lag(settings.kafka_bootstrap, settings.app_id, [events])[events]
        except Exception as exc:  # noqa: BLE001  the counts above are still worth printing
            out["lag_error"] = f"{type(exc).__name__}: {exc}"
    except BrokerUnreachable as exc:
        out["error"] = str(exc)
    except (KafkaError, OSError) as exc:
        out["error"] = f"Kafka at {settings.kafka_bootstrap} is unreachable: {exc}"
    return out


def worker_health(settings: Settings, timeout_s: float = 2.0) -> dict:
    """The local worker's view of Postgres from its /metrics/ page; `reachable: false` if no worker answers there.

    `database_down_since` (ISO time) is set while the worker waits out a database outage.
    """
    url = f"http://127.0.0.1:{settings.worker_web_port}/metrics/"
    out: dict = {"reachable": False, "url": url, "database_up": None, "database_down_since": None, "error": None}
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            page = resp.read().decode()
    except OSError as exc:
        out["error"] = f"no worker answers at {url}: {exc}"
        return out
    samples = {s.name: s.value for family in text_string_to_metric_families(page) for s in family.samples}
    out["reachable"] = True
    if "vitrine_worker_database_up" in samples:
        out["database_up"] = samples["vitrine_worker_database_up"] == 1
    since = samples.get("vitrine_worker_database_down_since_seconds", 0)
    if since > 0:
        out["database_down_since"] = datetime.fromtimestamp(since, UTC).isoformat(timespec="seconds")
    return out
