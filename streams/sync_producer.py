"""Blocking Kafka clients for command-line tools: a producer whose flush proves every record was
acknowledged (acks="all"), and a group-less reader of a whole topic."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError

from streams.lag import high_watermarks

log = logging.getLogger(__name__)


class BrokerUnreachable(Exception):
    """The broker could not be reached, or did not acknowledge every record in time."""


class SyncProducer:
    """kafka-python producer with acks="all" and linger batching; `flush()` raises unless all were acked.

    Ordering per key can only be bent by a retry after a failed batch; the worker ignores older
    product versions, so that is harmless (Tansu offers no idempotent producer to prevent it).
    """

    def __init__(self, bootstrap: str, *, client_id: str = "vitrine-cli", timeout_s: float = 10.0):
        self.bootstrap = bootstrap
        self.timeout_s = timeout_s
        self.acked = 0
        self.failed = 0
        self.first_error: str | None = None
        try:
            self._producer = KafkaProducer(
                bootstrap_servers=bootstrap,
                client_id=client_id,
                acks="all",
                linger_ms=20,
                batch_size=256 * 1024,
                retries=5,
                request_timeout_ms=int(timeout_s * 1000),
                max_block_ms=int(timeout_s * 1000),
                bootstrap_timeout_ms=int(timeout_s * 1000),
            )
        except (KafkaError, OSError) as exc:
            raise BrokerUnreachable(f"Kafka at {bootstrap} is unreachable: {exc}") from exc

    def send(self, topic: str, key: str | None, value: bytes) -> None:
        """Queue one record; its acknowledgement is counted when it arrives."""
        try:
            future = self._producer.send(topic, key=key.encode() if key is not None else None, value=value)
        except KafkaError as exc:  # buffer full for max_block_ms, or no metadata: the broker is gone
            raise BrokerUnreachable(f"Kafka at {self.bootstrap} did not accept records: {exc}") from exc
        future.add_callback(self._on_ack)
        future.add_errback(self._on_error)

    def flush(self) -> None:
        """Wait until every queued record is acknowledged; raise if any was not."""
        try:
            self._producer.flush(timeout=self.timeout_s * 3)
        except KafkaError as exc:
            raise BrokerUnreachable(f"Kafka at {self.bootstrap} did not acknowledge in time: {exc}") from exc
        if self.failed:
            raise BrokerUnreachable(f"{self.failed} record(s) were not acknowledged: {self.first_error}")

    def close(self) -> None:
        """Release the connection without waiting for unsent records (call `flush()` first to keep them)."""
        self._producer.close(timeout=1)

    def __enter__(self) -> SyncProducer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _on_ack(self, _metadata) -> None:
        self.acked += 1

    def _on_error(self, exc: BaseException) -> None:
        self.failed += 1
        if self.first_error is None:
            self.first_error = repr(exc)
            log.warning("produce failed: %r", exc)


def read_topic(
    bootstrap: str, topic: str, *, timeout_s: float = 10.0, read_timeout_s: float = 30.0, client_id: str = "vitrine-cli"
) -> Iterator[ConsumerRecord]:
    """Every record of `topic` from the beginning to (at least) its end when called; no group, nothing committed."""
    ms = int(timeout_s * 1000)
    try:
        # kafka-python waits 30 s for an absent broker by default; a command should say so sooner.
        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            client_id=client_id,
            bootstrap_timeout_ms=ms,
            request_timeout_ms=max(ms, 1000),
        )  # must exceed the 500 ms fetch wait
    except (KafkaError, OSError) as exc:
        raise BrokerUnreachable(f"Kafka at {bootstrap} is unreachable: {exc}") from exc
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not parts:
            return
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        # Not ListOffsets: Tansu answers it with one batch's base offset + 1, far below the end on S3 storage.
        ends = high_watermarks(bootstrap, parts, timeout_s)
        deadline = time.monotonic() + read_timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in parts):
            if time.monotonic() > deadline:
                raise BrokerUnreachable(f"reading {topic} took longer than {read_timeout_s:.0f} s")
            for records in consumer.poll(timeout_ms=500).values():
                yield from records
    except KafkaError as exc:
        raise BrokerUnreachable(f"Kafka at {bootstrap} failed while reading {topic}: {exc}") from exc
    finally:
        consumer.close()
