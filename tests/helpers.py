"""Helpers shared by tests: child processes with the test's settings, waiting for conditions."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime

from core.settings import Settings


def settings_env(s: Settings) -> dict[str, str]:
    """The environment that makes a `vitrine` child process use the same settings."""
    return {
        "VITRINE_DATA_DIR": str(s.data_dir),
        "VITRINE_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
        "VITRINE_DATABASE_URL": s.database_url,
        "VITRINE_TOPIC_PREFIX": s.topic_prefix,
        "VITRINE_APP_ID": s.app_id,
        "VITRINE_TOPIC_PARTITIONS": str(s.topic_partitions),
        "VITRINE_WORKER_WEB_PORT": str(s.worker_web_port),
        "VITRINE_API_PORT": str(s.api_port),
        "VITRINE_FETCH_ALLOW_PRIVATE": str(s.fetch_allow_private).lower(),
        "VITRINE_FETCH_ALLOW_HOSTS": s.fetch_allow_hosts,
        "VITRINE_FETCH_TIMEOUT_S": str(s.fetch_timeout_s),
    }


def wait_for(condition: Callable[[], object], timeout_s: float = 60.0, interval_s: float = 0.2, what: str = ""):
    """Poll `condition` until it returns something truthy; fail the test with `what` after the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what or condition}")


def read_topic_records(bootstrap: str, topic: str) -> list[tuple[str | None, bytes]]:
    """Every record of a topic, from the beginning to its current end: (key, value) in partition order."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        out = []
        while any(consumer.position(tp) < ends[tp] for tp in parts):
            for records in consumer.poll(timeout_ms=500).values():
                out += [(r.key.decode() if r.key else None, r.value) for r in records]
        return out
    finally:
        consumer.close()


def dead_letter(
    tenant: str, pid: str, event_id: str, error: str = "ConnectError: image host down", second: int = 5
) -> tuple[bytes, bytes]:
    """(key, value) of a dead letter as the worker writes it, for an upsert of `pid`."""
    from core.contracts import DeadLetter

    original = {
        "event_id": event_id,
        "tenant_id": tenant,
        "type": "product.upserted",
        "product": {"id": pid, "version": 1, "image_urls": ["https://cdn.example.com/x.jpg"]},
    }
    record = DeadLetter(
        topic="catalog.product-events",
        key=f"{tenant}:{pid}",
        payload=json.dumps(original),
        error=error,
        attempts=3,
        failed_at=datetime(2026, 1, 2, 3, 4, second, tzinfo=UTC),
    )
    return record.key.encode(), record.model_dump_json().encode()
