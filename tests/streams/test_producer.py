"""The API's producer against a real Tansu that stops: fast 503s once the outage is known, few log lines, recovery."""

from __future__ import annotations

import asyncio
import gc
import logging
import time

import pytest

from core.contracts import InteractionEvent
from streams.embedded_broker import EmbeddedBroker
from streams.producer import BrokerUnavailable, EventProducer

pytestmark = pytest.mark.integration

TOPIC = "producer-circuit"


def click(i: int) -> InteractionEvent:
    return InteractionEvent(event_id=f"c{i}", tenant_id="acme", type="click", user_id="u", product_id="p")


async def sends_until_accepted(producer: EventProducer, timeout_s: float) -> float:
    """Seconds until a send is acknowledged again."""
    start = time.monotonic()
    while True:
        try:
            await producer.send(TOPIC, "k", click(0))
            return time.monotonic() - start
        except BrokerUnavailable:
            assert time.monotonic() - start < timeout_s, "the producer did not recover"
            await asyncio.sleep(0.2)


def test_an_outage_is_answered_at_once_logged_sparingly_and_closed_when_the_broker_is_back(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="aiokafka")
    caplog.set_level(logging.INFO, logger="streams")
    own = EmbeddedBroker(log_path=tmp_path / "broker.log").start()
    port = own.port
    restarted = None

    async def main() -> dict:
        producer = EventProducer(own.bootstrap, ack_timeout_s=2.0, probe_interval_s=0.5)
        await producer.start()
        await producer.send(TOPIC, "k", click(0))
        own.stop()
        start = time.monotonic()
        with pytest.raises(BrokerUnavailable):  # the send that finds the outage waits up to the ack timeout
            await producer.send_many(TOPIC, [("k", click(i)) for i in range(5)])
        first = time.monotonic() - start
        assert not producer.available
        later = []
        caplog.clear()
        window_start = time.monotonic()
        while time.monotonic() - window_start < 4.0:  # the outage goes on: every send refused at once
            start = time.monotonic()
            with pytest.raises(BrokerUnavailable, match="unreachable since"):
                await producer.send(TOPIC, "k", click(1))
            later.append(time.monotonic() - start)
            await asyncio.sleep(0.1)
        lines = [r for r in caplog.records if r.name.startswith(("aiokafka", "streams"))]
        nonlocal restarted
        restarted = EmbeddedBroker(port, log_path=tmp_path / "broker2.log").start()
        recovered = await sends_until_accepted(producer, 30)
        assert producer.available
        await producer.stop()
        return {"first": first, "later": later, "lines_per_s": len(lines) / 4.0, "recovered": recovered}

    try:
        figures = asyncio.run(main())
    finally:
        if restarted is not None:
            restarted.stop()
    logging.getLogger(__name__).info("producer outage figures: %s", figures)
    assert figures["first"] < 2.0 + 1.0
    assert len(figures["later"]) > 10 and max(figures["later"]) < 0.1  # measured ~0.1 ms each
    # aiokafka alone logged ~37 lines/s while its sender retried; throttled, one line per logger and message per 10 s.
    assert figures["lines_per_s"] <= 1.5, figures
    gc.collect()  # an unread failed future reports itself when it is collected
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]
