"""`vitrine bench broker`: what the embedded broker's storage costs as a partition grows.

Produces single-record batches (500 bytes, acks=all) to one partition of a broker of its own,
and at each step times one produce, a fetch of the last record and a read of everything, with
the worker's fetch wait. Tansu lists a partition's objects on each fetch and stops listing when
the wait runs out, so on S3 storage reads slow down, then stall, as batches accumulate.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from streams.embedded_broker import ManagedBroker
from streams.faust_transport import FETCH_MAX_WAIT_MS

TOPIC = "bench-broker"


def run_broker_bench(work_dir: Path, *, storage: str, steps: list[int], read_timeout_s: float = 60.0) -> dict:
    """Grow one partition by `steps` batches at a time; returns the timings of each step."""
    from core.machine import machine_info

    root = work_dir / f"bench-broker-{storage}"
    shutil.rmtree(root, ignore_errors=True)
    broker = ManagedBroker(root, storage=storage).start()
    rows, total = [], 0
    try:
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        admin.create_topics([NewTopic(TOPIC, 1, 1)])
        admin.close()
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
            consumer = KafkaConsumer(
                bootstrap_servers=broker.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=FETCH_MAX_WAIT_MS
            )
            try:
                consumer.assign([tp])
                consumer.seek(tp, total - 1)
                started = time.perf_counter()
                last = consumer.poll(timeout_ms=int(read_timeout_s * 1000))
                last_ms = 1000 * (time.perf_counter() - started) if last else None
                consumer.seek(tp, 0)
                started, n = time.perf_counter(), 0
                while n < total and time.perf_counter() - started < read_timeout_s:
                    n += sum(len(records) for records in consumer.poll(timeout_ms=1000).values())
                read_s = time.perf_counter() - started
            finally:
                consumer.close()
            rows.append(
                {
                    "batches": total,
                    "produce_ms": round(produce_ms, 2),
                    "fetch_last_ms": round(last_ms, 1) if last_ms is not None else None,
                    "read_all_s": round(read_s, 2),
                    "read_records": n,
                }
            )
        producer.close()
    finally:
        broker.stop()
        shutil.rmtree(root, ignore_errors=True)
    return {
        "benchmark": "broker",
        "machine": machine_info(),
        "storage": storage,
        "fetch_max_wait_ms": FETCH_MAX_WAIT_MS,
        "steps": rows,
    }
