"""Consumer lag of a group: end offset minus committed offset, per partition (from the broker).

On Tansu the reported end offset is the first offset of the last batch + 1, so a lag measured
while producers batch is a lower bound; on Apache Kafka it is exact.
"""

from __future__ import annotations

from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient


def consumer_lag(bootstrap: str, group: str, topics: list[str], timeout_s: float = 5.0) -> dict[str, int]:
    """Total lag per topic; a partition the group never committed counts from its start."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000),
                             client_id=f"{group}-lag")
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000) + 1,
                             enable_auto_commit=False)
    try:
        # kafka-python 3.0 answers {group: {TopicPartition: OffsetAndMetadata}}.
        offsets = admin.list_group_offsets(group).get(group, {})
        committed = {tp: getattr(om, "offset", om) for tp, om in offsets.items()}
        parts = [TopicPartition(t, p) for t in topics for p in (consumer.partitions_for_topic(t) or ())]
        ends = consumer.end_offsets(parts) if parts else {}
        starts = consumer.beginning_offsets(parts) if parts else {}
        lag: dict[str, int] = {t: 0 for t in topics}
        for tp in parts:
            done = committed.get(tp, -1)
            lag[tp.topic] += max(0, ends[tp] - (done if done >= 0 else starts[tp]))
        return lag
    finally:
        consumer.close()
        admin.close()
