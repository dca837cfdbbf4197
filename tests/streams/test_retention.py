"""Retention of the durable broker (streams/retention.py): what one pass deletes, and that Tansu reads on after it.

The rule is pure (`deletable`, `partition_floor`); the pass runs against a durable Tansu of its own
(S3 on SeaweedFS), whose objects are listed back through the same filer to see what is left.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from core.pace import rest_after
from streams.embedded_broker import ManagedBroker
from streams.retention import BatchObject, BrokerRetention, deletable, partition_floor

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def batch(offset: int, age_s: float = 3600) -> BatchObject:
    return BatchObject(f"/records/{offset:020d}.batch", offset, T0 - timedelta(seconds=age_s))


def test_a_batch_goes_only_when_the_next_one_starts_at_or_below_the_floor():
    # Batches of 1, 5 and 1 records: 0, 1-5, 6, 7 (the newest).
    batches = [batch(0), batch(1), batch(6), batch(7)]
    assert [b.base_offset for b in deletable(batches, 0, T0)] == []
    assert [b.base_offset for b in deletable(batches, 1, T0)] == [0]
    assert [b.base_offset for b in deletable(batches, 5, T0)] == [0]  # offset 5 is in batch 1, not consumed
    assert [b.base_offset for b in deletable(batches, 6, T0)] == [0, 1]
    assert [b.base_offset for b in deletable(batches, 100, T0)] == [0, 1, 6]  # the newest always stays
    assert deletable([batch(0)], 100, T0) == []


def test_a_batch_younger_than_the_minimum_age_stays():
    batches = [batch(0, age_s=30), batch(1, age_s=5), batch(2, age_s=0)]
    assert [b.base_offset for b in deletable(batches, 10, T0 - timedelta(seconds=10))] == [0]


def test_the_floor_is_the_lowest_group_and_a_group_missing_a_partition_keeps_it_whole():
    committed = {"worker": {0: 30, 1: 7}, "bench": {0: 25}}
    assert partition_floor(committed, 0) == (25, "bench")
    assert partition_floor(committed, 1) is None  # bench reads the topic but never committed on partition 1
    assert partition_floor({}, 0) is None  # nobody reads the topic
    assert partition_floor({"worker": {0: -1}}, 0) is None


def test_a_pass_rests_after_each_request_so_that_it_works_its_duty():
    assert rest_after(0.010, 0.2) == pytest.approx(0.040)  # 10 ms of work, 40 ms of rest: 20 %
    assert rest_after(0.010, 0.5) == pytest.approx(0.010)
    assert rest_after(0.010, 1.0) == 0.0
    with pytest.raises(ValueError, match="duty"):
        BrokerRetention(None, "x:1", interval_s=60, min_age_s=0, duty=0)


class _Listing:
    """The bucket's listing of one partition at the process edge (the filer): which batches a pass read."""

    def __init__(self, batches: list[BatchObject]):
        self.all, self.read, self.deleted, self.pace = batches, [], [], None

    def batches(self, topic: str, partition: int):
        for b in self.all:
            self.read.append(b.base_offset)
            yield b

    def delete(self, path: str) -> None:
        self.deleted.append(path)


def test_a_pass_lists_no_further_than_the_first_batch_too_young_to_go():
    # Offsets 0-9 written an hour ago, 10-19 a second ago; every group is past offset 100.
    bucket = _Listing([batch(i) for i in range(10)] + [batch(i, age_s=1) for i in range(10, 20)])
    retention = BrokerRetention(bucket, "x:1", interval_s=60, min_age_s=600, duty=1.0)
    assert retention._trim("events", 0, 100, T0 - timedelta(seconds=600)) == 10
    assert bucket.read == list(range(11))  # batch 10 ends the candidates; 11-19 are never listed
    assert bucket.deleted == [batch(i).path for i in range(10)]


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> list[int]:
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=0, max_in_flight_requests_per_connection=1
    )
    try:  # one record per batch, one batch per object
        return [producer.send(topic, value=v, partition=0).get(10).offset for v in values]
    finally:
        producer.close()


def _read(bootstrap: str, group: str, topic: str, n: int, timeout_s: float = 20.0) -> list[tuple[int, bytes]]:
    """`n` records from the group's committed offset (assigned, no group join), then commit."""
    tp = TopicPartition(topic, 0)
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
    )
    try:
        consumer.assign([tp])
        got: list[tuple[int, bytes]] = []
        deadline = time.monotonic() + timeout_s
        while len(got) < n and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200, max_records=n - len(got)).values():
                got += [(r.offset, r.value) for r in records]
        consumer.commit()
        return got
    finally:
        consumer.close()


def _earliest(bootstrap: str, topic: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        tp = TopicPartition(topic, 0)
        return consumer.beginning_offsets([tp])[tp]
    finally:
        consumer.close()


@pytest.mark.integration
def test_a_pass_deletes_below_every_groups_commit_and_tansu_reads_on_and_restarts(tmp_path):
    broker = ManagedBroker(tmp_path / "broker", storage="durable").start()
    try:
        # The S3 server's Go code runs on one core (streams/embedded_s3.py: it shares the machine with serving).
        assert "GOMAXPROCS=1" in (Path("/proc") / str(broker.s3.proc.pid) / "environ").read_text().split("\0")
        bootstrap = broker.bootstrap
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.create_topics([NewTopic("events", 1, 1), NewTopic("unread", 1, 1)])
        admin.close()
        values = [f"v{i}".encode() for i in range(40)]
        assert _produce(bootstrap, "events", values) == list(range(40))
        _produce(bootstrap, "unread", values[:5])
        assert len(_read(bootstrap, "worker", "events", 30)) == 30  # commits 30
        assert len(_read(bootstrap, "slow", "events", 25)) == 25  # commits 25: the floor

        bucket = broker.bucket()
        retention = BrokerRetention(bucket, bootstrap, interval_s=60, min_age_s=3600, duty=0.5)
        assert retention.run_once().deleted == 0  # every batch is younger than an hour
        retention.min_age_s = 0
        report = retention.run_once()
        assert report.deleted == 25
        # Paced: after each filer request (listings, 25 DELETEs) a rest as long as it took (duty 0.5).
        assert 0 < report.rested_s < report.seconds
        assert bucket.pace is None  # only the pass rests: the listings below do not
        assert report.floors["events/0"] == (25, "slow")
        assert report.kept_whole == 1  # `unread`: no group committed there
        left = [b.base_offset for b in bucket.batches("events", 0)]
        assert left == list(range(25, 40))  # nothing at or above the lowest commit was deleted
        assert [b.base_offset for b in bucket.batches("unread", 0)] == list(range(5))
        assert retention.run_once().deleted == 0  # idempotent
        assert _earliest(bootstrap, "events") == 25

        # Both groups read on from their commits: the unread old records, then new ones.
        assert _produce(bootstrap, "events", [b"n40", b"n41"]) == [40, 41]
        assert _read(bootstrap, "worker", "events", 12) == list(zip(range(30, 40), values[30:], strict=True)) + [
            (40, b"n40"),
            (41, b"n41"),
        ]
        # A group that never committed starts at the oldest batch left (a gap, as after compaction).
        assert [o for o, _ in _read(bootstrap, "newcomer", "events", 17)] == list(range(25, 42))

        broker.stop()
        broker = ManagedBroker(tmp_path / "broker", storage="durable").start()
        assert _produce(bootstrap, "events", [b"n42"]) == [42]  # offsets stay monotonic
        assert _read(bootstrap, "worker", "events", 1) == [(42, b"n42")]
        assert _earliest(bootstrap, "events") == 25
        assert _read(bootstrap, "slow", "events", 18)[0] == (25, values[25])
        bucket.close()
        retention.bucket = bucket = broker.bucket()
        report = retention.run_once()  # commits now: worker 43, slow 43, newcomer 42
        assert (report.deleted, report.floors["events/0"]) == (17, (42, "newcomer"))
        assert [b.base_offset for b in bucket.batches("events", 0)] == [42]
        assert _read(bootstrap, "newcomer", "events", 1) == [(42, b"n42")]
        bucket.close()
    finally:
        broker.stop()
