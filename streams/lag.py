"""Consumer lag of a group: end offset minus committed offset, per partition (from the broker).

End offsets are high watermarks read from fetch responses: Tansu answers ListOffsets(latest)
with the first offset of one batch + 1 (the last one written; on its S3 storage, the first one
written in the newest second of the object store's one-second clock), often far below the end.
"""

from __future__ import annotations

import time

from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient


def high_watermarks(bootstrap: str, parts: list[TopicPartition], timeout_s: float = 5.0) -> dict[TopicPartition, int]:
    """Each partition's high watermark, as its fetch responses report it (ListOffsets where none came in time)."""
    if not parts:
        return {}
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=100,
        request_timeout_ms=max(int(timeout_s * 1000), 1000) + 1,
    )
    try:
        listed = consumer.end_offsets(parts)
        consumer.assign(parts)
        for tp in parts:
            consumer.seek(tp, listed[tp])  # a lower bound of the end: the fetch from there is short
        deadline = time.monotonic() + timeout_s
        while any(consumer.highwater(tp) is None for tp in parts) and time.monotonic() < deadline:
            consumer.poll(timeout_ms=100, max_records=1)
        return {tp: max(listed[tp], consumer.highwater(tp) or 0) for tp in parts}
    finally:
        consumer.close()


def consumer_lag(bootstrap: str, group: str, topics: list[str], timeout_s: float = 5.0) -> dict[str, int]:
    """Total lag per topic; a partition the group never committed counts from its start."""
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000), client_id=f"{group}-lag"
    )
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000) + 1, enable_auto_commit=False
    )
    try:
        # kafka-python 3.0 answers {group: {TopicPartition: OffsetAndMetadata}}.
        offsets = admin.list_group_offsets(group).get(group, {})
        committed = {tp: getattr(om, "offset", om) for tp, om in offsets.items()}
        parts = [TopicPartition(t, p) for t in topics for p in (consumer.partitions_for_topic(t) or ())]
        ends = high_watermarks(bootstrap, parts, timeout_s)
        starts = consumer.beginning_offsets(parts) if parts else {}
        lag: dict[str, int] = dict.fromkeys(topics, 0)
        for tp in parts:
            done = committed.get(tp, -1)
            lag[tp.topic] += max(0, ends[tp] - (done if done >= 0 else starts[tp]))
        return lag
    finally:
        consumer.close()
        admin.close()
