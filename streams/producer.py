"""An async Kafka producer for the API: send JSON, wait for the broker's ack, fail fast while the broker is down.

A circuit breaker sits in front of the broker: the send that finds an outage waits up to the ack
timeout (it cannot know sooner), opens the circuit, and from then on every send is refused at once
(the API answers 503 + Retry-After in well under a second instead of after the ack timeout, past
Shopify's 5 s delivery timeout). A background probe asks the broker for metadata every
`probe_interval_s` and closes the circuit when it answers.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import Counter, Gauge
from pydantic import BaseModel

from streams.log_throttle import throttle

log = logging.getLogger(__name__)

CIRCUIT_OPEN = Gauge("vitrine_kafka_circuit_open", "1 while the producer refuses sends: the broker is unreachable")
REFUSED = Counter("vitrine_kafka_sends_refused_total", "Sends refused at once because the circuit was open")
OUTAGES = Counter("vitrine_kafka_outages_total", "Times the producer found the broker unreachable (circuit opened)")


class BrokerUnavailable(Exception):
    """The broker did not acknowledge in time; the caller should answer 503 + Retry-After."""


def _retrieve(future: asyncio.Future) -> None:
    # A delivery future nobody awaits any more: read its outcome, else asyncio logs
    # "Future exception was never retrieved" for each at garbage collection.
    if not future.cancelled():
        future.exception()


class EventProducer:
    """One AIOKafkaProducer per process, started in the app lifespan."""

    def __init__(
        self,
        bootstrap: str,
        *,
        client_id: str = "vitrine-api",
        ack_timeout_s: float = 10.0,
        probe_interval_s: float = 1.0,
    ):
        self.bootstrap = bootstrap
        self.ack_timeout_s, self.probe_interval_s = ack_timeout_s, probe_interval_s
        throttle("aiokafka")  # its per-retry lines during an outage: one per message per 10 s
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            client_id=client_id,
            acks="all",
            request_timeout_ms=int(ack_timeout_s * 1000),
            linger_ms=2,
        )
        self._started = False
        self._down_since: float | None = None  # wall-clock start of the known outage; None: circuit closed
        self._probe: asyncio.Task | None = None

    @property
    def available(self) -> bool:
        """False while the circuit is open (an outage is known and not yet over)."""
        return self._started and self._down_since is None

    async def start(self) -> None:
        try:
            await asyncio.wait_for(self._producer.start(), self.ack_timeout_s)
        except (TimeoutError, KafkaError, OSError) as exc:
            raise BrokerUnavailable(f"Kafka at {self.bootstrap} is unreachable: {exc!r}") from exc
        self._started = True

    async def stop(self) -> None:
        """Flush and close, but never hang a shutdown on a broker that is gone."""
        if self._probe is not None:
            self._probe.cancel()
            await asyncio.wait({self._probe}, timeout=1.0)
        if self._started:
            self._started = False
            # Not asyncio.wait_for: on timeout it waits for the cancelled coroutine to finish, and
            # aiokafka's stop can outlive a cancellation when a request to the broker never returns.
            # During a known outage there is nothing to flush that could still arrive: a short wait.
            wait_s = self.ack_timeout_s if self._down_since is None else min(1.0, self.ack_timeout_s)
            task = asyncio.ensure_future(self._producer.stop())
            done, _ = await asyncio.wait({task}, timeout=wait_s)
            if not done:
                task.cancel()
                task.add_done_callback(_retrieve)
                log.warning("Kafka producer did not close within %.0fs; abandoned", wait_s)
            elif task.exception() is not None:
                log.warning("Kafka producer did not close cleanly: %r", task.exception())
        CIRCUIT_OPEN.set(0)

    async def send(self, topic: str, key: str, event: BaseModel) -> None:
        """Produce one event and wait for the broker's acknowledgement."""
        await self.send_many(topic, [(key, event)])

    async def send_many(self, topic: str, events: list[tuple[str, BaseModel]]) -> None:
        """Produce events concurrently; returns once every one is acknowledged, raises BrokerUnavailable otherwise."""
        if not self._started:
            raise BrokerUnavailable("the Kafka producer is not running")
        if not events:
            return
        if self._down_since is not None:
            REFUSED.inc()
            since = time.strftime("%H:%M:%S", time.localtime(self._down_since))
            raise BrokerUnavailable(f"Kafka at {self.bootstrap} unreachable since {since}")
        futures: list[asyncio.Future] = []

        async def produce() -> None:
            for k, e in events:
                futures.append(await self._producer.send(topic, key=k.encode(), value=e.model_dump_json().encode()))
            # asyncio.wait, not gather: on a timeout the futures stay aiokafka's to settle, none is cancelled here.
            await asyncio.wait(futures)
            for f in futures:
                f.result()  # the first failure raises

        try:
            await asyncio.wait_for(produce(), self.ack_timeout_s)
        except (TimeoutError, KafkaError, OSError) as exc:
            for f in futures:
                f.add_done_callback(_retrieve)  # every one, settled now or later, is read
            self._open(exc)
            raise BrokerUnavailable(f"Kafka did not acknowledge: {exc!r}") from exc

    def _open(self, exc: BaseException) -> None:
        """Open the circuit (once per outage) and start probing for the broker's return."""
        if self._down_since is not None:
            return
        self._down_since = time.time()
        OUTAGES.inc()
        CIRCUIT_OPEN.set(1)
        log.error(
            "Kafka at %s unreachable (%r): refusing sends at once, probing every %.1fs",
            self.bootstrap,
            exc,
            self.probe_interval_s,
        )
        self._probe = asyncio.ensure_future(self._probe_until_back())

    async def _probe_until_back(self) -> None:
        probes = 0
        while True:
            await asyncio.sleep(self.probe_interval_s)
            probes += 1
            try:
                await asyncio.wait_for(self._producer.client.fetch_all_metadata(), self.ack_timeout_s)
            except (TimeoutError, KafkaError, OSError):
                continue
            except Exception:  # a bug in the probe must not leave the circuit open for ever
                log.exception("Kafka probe failed; closing the circuit")
            down_s = time.time() - (self._down_since or time.time())
            self._down_since = None
            CIRCUIT_OPEN.set(0)
            log.info(
                "Kafka at %s reachable again after %.1fs (%d probes): sends resumed", self.bootstrap, down_s, probes
            )
            return
