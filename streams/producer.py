"""An async Kafka producer for the API: send JSON, wait for the broker's ack, fail loudly."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from pydantic import BaseModel

log = logging.getLogger(__name__)


class BrokerUnavailable(Exception):
    """The broker did not acknowledge in time; the caller should answer 503 + Retry-After."""


class EventProducer:
    """One AIOKafkaProducer per process, started in the app lifespan."""

    def __init__(self, bootstrap: str, *, client_id: str = "vitrine-api", ack_timeout_s: float = 10.0):
        self.bootstrap = bootstrap
        self.ack_timeout_s = ack_timeout_s
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            client_id=client_id,
            acks="all",
            request_timeout_ms=int(ack_timeout_s * 1000),
            linger_ms=2,
        )
        self._started = False

    async def start(self) -> None:
        try:
            await asyncio.wait_for(self._producer.start(), self.ack_timeout_s)
        except (TimeoutError, KafkaError, OSError) as exc:
            raise BrokerUnavailable(f"Kafka at {self.bootstrap} is unreachable: {exc!r}") from exc
        self._started = True

    async def stop(self) -> None:
        """Flush and close, but never hang a shutdown on a broker that is gone."""
        if self._started:
            self._started = False
            # Not asyncio.wait_for: on timeout it waits for the cancelled coroutine to finish, and
            # aiokafka's stop can outlive a cancellation when a request to the broker never returns.
            task = asyncio.ensure_future(self._producer.stop())
            done, _ = await asyncio.wait({task}, timeout=self.ack_timeout_s)
            if not done:
                task.cancel()
                log.warning("Kafka producer did not close within %.0fs; abandoned", self.ack_timeout_s)
            elif task.exception() is not None:
                log.warning("Kafka producer did not close cleanly: %r", task.exception())

    async def send(self, topic: str, key: str, event: BaseModel) -> None:
        """Produce one event and wait for the broker's acknowledgement."""
        await self.send_many(topic, [(key, event)])

    async def send_many(self, topic: str, events: list[tuple[str, BaseModel]]) -> None:
        """Produce events concurrently; returns once every one is acknowledged."""
        if not self._started:
            raise BrokerUnavailable("the Kafka producer is not running")
        try:
            futures = [
                await self._producer.send(topic, key=k.encode(), value=e.model_dump_json().encode()) for k, e in events
            ]
            await asyncio.wait_for(asyncio.gather(*futures), self.ack_timeout_s)
        except (TimeoutError, KafkaError, OSError) as exc:
            log.warning("produce to %s failed: %r", topic, exc)
            raise BrokerUnavailable(f"Kafka did not acknowledge: {exc!r}") from exc
