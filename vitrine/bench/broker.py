"""`vitrine bench broker`: what the embedded broker's storage costs as a partition grows, with and without retention.

Produces single-record batches (500 bytes, acks=all) to one partition of a broker of its own. At each
step a consumer group reads the step's new records from its committed offset with the worker's
fetch wait and commits (what the worker does), a retention pass runs (durable storage, unless
switched off: streams/retention.py, minimum age 0), and one fetch of the last record is timed. Tansu
lists a partition's stored batches on each fetch, so on S3 storage without retention reads slow
down, then stall, as batches accumulate; with retention the partition holds about one step.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from streams.embedded_broker import ManagedBroker
from streams.faust_transport import FETCH_MAX_WAIT_MS
from streams.retention import BrokerRetention

TOPIC = "bench-broker"
GROUP = "bench-broker-worker"


def run_broker_bench(
    work_dir: Path, *, storage: str, steps: list[int], retention: bool = True, read_timeout_s: float = 60.0
) -> dict:
    """Grow one partition by `steps` batches at a time; returns the timings of each step."""
    from core.machine import machine_info

    retention = retention and storage == "durable"  # memory storage keeps no objects to delete
    root = work_dir / f"bench-broker-{storage}"
    shutil.rmtree(root, ignore_errors=True)
    broker = ManagedBroker(root, storage=storage).start()
    rows, total, deleted = [], 0, 0
    trimmer = None
    try:
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        admin.create_topics([NewTopic(TOPIC, 1, 1)])
        admin.close()
        if retention:
            trimmer = BrokerRetention(broker.bucket(), broker.bootstrap, interval_s=0, min_age_s=0)
        # One record per batch: in flight one at a time, no linger.
        producer = KafkaProducer(
            bootstrap_servers=broker.bootstrap, acks="all", linger_ms=0, max_in_flight_requests_per_connection=1
        )
        tp = TopicPartition(TOPIC, 0)
        for step in steps:
            started = time.perf_counter()
            for _ in range(step):
                producer.send(TOPIC, value=b"x" * 500).get(30)
            produce_ms = 1000 * (time.perf_counter() - started) / step
            total += step
            stored = total - deleted
            read_s, read = _group_read(broker.bootstrap, tp, step, read_timeout_s)
            pass_s = pass_rested = pass_deleted = None
            if trimmer is not None:
                report = trimmer.run_once()
                pass_s, pass_rested, pass_deleted = round(report.seconds, 2), round(report.rested_s, 2), report.deleted
                deleted += report.deleted
            rows.append(
                {
                    "batches": total,
                    "stored_when_read": stored,
                    "produce_ms": round(produce_ms, 2),
                    "worker_read_s": round(read_s, 2),
                    "worker_records": read,
                    "retention_deleted": pass_deleted,
                    "retention_s": pass_s,
                    "retention_rested_s": pass_rested,  # of retention_s: the pass's rests (RETENTION_DUTY)
                    "fetch_last_ms": _fetch_last_ms(broker.bootstrap, tp, total - 1, read_timeout_s),
                    "stored_after": total - deleted,
                }
            )
        producer.close()
    finally:
        if trimmer is not None:
            trimmer.stop()
        broker.stop()
        shutil.rmtree(root, ignore_errors=True)
    return {
        "benchmark": "broker",
        "machine": machine_info(),
        "storage": storage,
        "retention": retention,
        "fetch_max_wait_ms": FETCH_MAX_WAIT_MS,
        "steps": rows,
    }


def _group_read(bootstrap: str, tp: TopicPartition, n: int, timeout_s: float) -> tuple[float, int]:
    """(seconds, records): the group reads up to `n` records from its committed offset, then commits."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=GROUP,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
    )
    try:
        consumer.assign([tp])  # no group join: the commit is all the bench needs of the group
        started, read = time.perf_counter(), 0
        while read < n and time.perf_counter() - started < timeout_s:
            read += sum(len(records) for records in consumer.poll(timeout_ms=1000, max_records=n - read).values())
        elapsed = time.perf_counter() - started
        consumer.commit()
        return elapsed, read
    finally:
        consumer.close()


def _fetch_last_ms(bootstrap: str, tp: TopicPartition, offset: int, timeout_s: float) -> float | None:
    """Milliseconds until one poll at `offset` returns it (None: nothing within the timeout)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=FETCH_MAX_WAIT_MS)
    try:
        consumer.assign([tp])
        consumer.seek(tp, offset)
        started = time.perf_counter()
        last = consumer.poll(timeout_ms=int(timeout_s * 1000))
        return round(1000 * (time.perf_counter() - started), 1) if last else None
    finally:
        consumer.close()
