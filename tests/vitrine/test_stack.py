"""`vitrine up` lifecycle and start-up errors, as a user runs them (real processes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from streams.embedded_broker import free_port, port_open
from tests.helpers import wait_for
from tests.vitrine.helpers import alive, start_up, vitrine

pytestmark = pytest.mark.integration


def test_up_stops_cleanly_and_keeps_data_across_restarts(tmp_path):
    port = free_port()
    env = {
        "VITRINE_DATA_DIR": str(tmp_path / "data"),
        "VITRINE_KAFKA_PORT": str(port),
        "VITRINE_KAFKA_BOOTSTRAP": "",
        "VITRINE_DATABASE_URL": "",
    }
    proc, out = start_up(env)
    assert f"kafka     127.0.0.1:{port}" in out and "postgres" in out
    stack = json.loads((tmp_path / "data" / "stack.json").read_text())
    pg_pid = int((tmp_path / "data" / "postgres" / "postmaster.pid").read_text().split()[0])
    tansu_pids = [
        int(p)
        for p in subprocess.run(
            ["pgrep", "-f", f"tansu.*127.0.0.1:{port}"], capture_output=True, text=True
        ).stdout.split()
    ]
    weed_pids = [
        int(p)
        for p in subprocess.run(
            ["pgrep", "-f", f"weed mini -dir={tmp_path / 'data'}"], capture_output=True, text=True
        ).stdout.split()
    ]
    assert stack["kafka_bootstrap"] == f"127.0.0.1:{port}" and tansu_pids and weed_pids and alive(pg_pid)

    created = vitrine("tenant", "create", "Acme Shoes", env=env)
    assert created.returncode == 0, created.stderr
    assert "webhook secret  whsec_" in created.stdout

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    wait_for(lambda: not any(alive(p) for p in [pg_pid, *tansu_pids, *weed_pids]), 15, what="no process left behind")
    assert not port_open("127.0.0.1", port)
    assert not (tmp_path / "data" / "stack.json").exists()

    proc, _ = start_up(env)  # same data dir, same port: the port was freed
    try:
        listed = vitrine("tenant", "list", env=env)
        assert listed.returncode == 0 and "acme-shoes" in listed.stdout
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0


def test_unreachable_services_give_one_clear_line(database_url, tmp_path):
    env = {
        "VITRINE_DATA_DIR": str(tmp_path),
        "VITRINE_KAFKA_BOOTSTRAP": "127.0.0.1:1",
        "VITRINE_DATABASE_URL": "postgresql://vitrine@127.0.0.1:1/vitrine",
    }
    res = vitrine("worker", env=env)
    assert res.returncode != 0
    assert res.stderr.strip().splitlines()[-1].startswith("error: Postgres at postgresql+psycopg://vitrine@127.0.0.1:1")
    assert "Traceback" not in res.stderr

    t0 = time.monotonic()
    res = vitrine("worker", env={**env, "VITRINE_DATABASE_URL": database_url})
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("error: Kafka at 127.0.0.1:1 is unreachable")
    assert time.monotonic() - t0 < 60


def test_no_stack_and_no_settings_says_how_to_start(tmp_path):
    res = vitrine(
        "tenant",
        "list",
        env={"VITRINE_DATA_DIR": str(tmp_path), "VITRINE_KAFKA_BOOTSTRAP": "", "VITRINE_DATABASE_URL": ""},
    )
    assert res.returncode == 3 and "vitrine up" in res.stderr and "Traceback" not in res.stderr  # 3: unreachable


def test_up_trims_the_durable_broker_below_the_committed_offsets(database_url, tmp_path):
    from kafka import KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition

    from core.settings import Settings
    from vitrine.stack import EmbeddedStack

    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        kafka_bootstrap="",
        broker_storage="durable",
        broker_retention_interval_s=0.5,
        broker_retention_min_age_s=0,
        topic_prefix="ret.",
        topic_partitions=1,
    )
    stack = EmbeddedStack(settings)
    resolved = stack.start()
    try:
        assert stack.retention is not None and stack.retention.running
        assert stack.retention.pid != os.getpid()  # a process of its own: its passes take no GIL from this one
        topic = resolved.topic("catalog.product-events")
        producer = KafkaProducer(bootstrap_servers=resolved.kafka_bootstrap, acks="all", linger_ms=0)
        for i in range(6):
            producer.send(topic, value=b"%d" % i, partition=0).get(10)
        producer.close()
        tp = TopicPartition(topic, 0)
        consumer = KafkaConsumer(
            bootstrap_servers=resolved.kafka_bootstrap, group_id="worker", enable_auto_commit=False
        )
        consumer.assign([tp])
        consumer.commit({tp: OffsetAndMetadata(4, None, -1)})  # records 0-3 done
        consumer.close()
        bucket = stack.broker.bucket()
        wait_for(lambda: [b.base_offset for b in bucket.batches(topic, 0)] == [4, 5], 15, what="batches 0-3 deleted")
        bucket.close()
        retention = stack.retention
    finally:
        stack.stop()
    assert stack.retention is None and not retention.running  # stopped with the stack
