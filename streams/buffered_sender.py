"""Send events to Kafka off the request path: a bounded in-memory buffer drained by a task.

The request handler only enqueues (never waits on the broker). The drainer waits `linger_s` after
the first event of a batch so that one produce request carries many events: a durable broker pays
per batch it stores (the embedded Tansu writes each partition's batch as an object), not per event.
When the broker is down the drainer keeps retrying the batch in hand while the buffer absorbs new
events; once the buffer is full, further events are dropped and counted (`outcome="lost"`), never
silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from prometheus_client import Counter, Gauge
from pydantic import BaseModel

from streams.producer import BrokerUnavailable, EventProducer

log = logging.getLogger(__name__)

SENT = Counter(
    "vitrine_buffered_events_total", "Events sent off the request path, by topic and outcome", ["topic", "outcome"]
)
BUFFERED = Gauge("vitrine_send_buffer_events", "Events waiting in the send buffer", ["topic"])
LOG_EVERY_S = 30.0


class BufferedSender:
    def __init__(
        self,
        producer: EventProducer,
        topic: str,
        *,
        max_buffer: int = 50_000,
        batch: int = 500,
        retry_s: float = 1.0,
        linger_s: float = 0.0,
    ):
        self.producer, self.topic, self.batch, self.retry_s, self.linger_s = producer, topic, batch, retry_s, linger_s
        self.queue: asyncio.Queue[tuple[str, BaseModel]] = asyncio.Queue(max_buffer)
        self._task: asyncio.Task | None = None
        self._in_hand = 0  # events taken off the queue and not yet acknowledged: lost too if we stop now
        self._closing = asyncio.Event()  # set by close(): a lingering batch goes out at once

    def submit(self, key: str, event: BaseModel) -> bool:
        """Enqueue without waiting; False (and counted as lost) if the buffer is full."""
        try:
            self.queue.put_nowait((key, event))
        except asyncio.QueueFull:
            SENT.labels(self.topic, "lost").inc()
            return False
        BUFFERED.labels(self.topic).set(self.queue.qsize())
        return True

    def start(self) -> None:
        self._task = asyncio.create_task(self._drain(), name=f"send-{self.topic}")

    async def _drain(self) -> None:
        while True:
            batch = [await self.queue.get()]
            self._in_hand = 1  # counted from here on: close() must not take a lingering batch for drained
            if self.linger_s and self.queue.qsize() < self.batch - 1 and not self._closing.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), self.linger_s)
            while len(batch) < self.batch and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            self._in_hand = len(batch)
            failures, logged_at = 0, None
            while True:
                try:
                    await self.producer.send_many(self.topic, batch)
                    SENT.labels(self.topic, "sent").inc(len(batch))
                    self._in_hand = 0
                    if failures:
                        log.info("sent %d held events to %s after %d failed tries", len(batch), self.topic, failures)
                    break
                except BrokerUnavailable as exc:
                    failures += 1
                    now = asyncio.get_running_loop().time()
                    # One line per LOG_EVERY_S, not one per retry: an outage of an hour is a few hundred lines.
                    if logged_at is None or now - logged_at >= LOG_EVERY_S:
                        logged_at = now
                        log.warning(
                            "holding %d events for %s (%d more buffered, %d failed tries): %s",
                            len(batch),
                            self.topic,
                            self.queue.qsize(),
                            failures,
                            exc,
                        )
                    BUFFERED.labels(self.topic).set(self.queue.qsize())
                    await asyncio.sleep(self.retry_s)
            BUFFERED.labels(self.topic).set(self.queue.qsize())

    async def close(self, timeout_s: float = 5.0) -> None:
        """Give the buffer `timeout_s` to drain, then count what is left, the batch in hand included, as lost."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        self._closing.set()
        while (not self.queue.empty() or self._in_hand) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        if self._task is not None:
            self._task.cancel()  # bounded: a send stuck on the broker must not hold up shutdown
            await asyncio.wait({self._task}, timeout=1.0)
        left = self.queue.qsize() + self._in_hand
        if left:
            SENT.labels(self.topic, "lost").inc(left)
            log.error("%d events for %s were not sent before shutdown", left, self.topic)
