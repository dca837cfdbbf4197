"""The exposure buffer's accounting: every event it was given is either acknowledged or counted as lost."""

from __future__ import annotations

import asyncio
import uuid

from prometheus_client import REGISTRY

from core.contracts import InteractionEvent
from streams.buffered_sender import BufferedSender
from streams.embedded_broker import free_port
from streams.producer import EventProducer


def counted(topic: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("vitrine_buffered_events_total", {"topic": topic, "outcome": outcome}) or 0.0


def test_events_unsent_at_shutdown_are_all_counted_lost_the_batch_in_hand_included():
    """Before: the batch the drainer held (retrying against an absent broker) was not counted."""
    topic = f"t{uuid.uuid4().hex[:8]}.storefront.interactions"

    async def scenario() -> None:
        producer = EventProducer(f"127.0.0.1:{free_port()}", ack_timeout_s=0.5)  # never started: no broker
        sender = BufferedSender(producer, topic, max_buffer=10, batch=4, retry_s=0.05)
        event = InteractionEvent(event_id="e", tenant_id="acme", type="exposure", user_id="u")
        accepted = [sender.submit(f"acme:u{i}", event) for i in range(12)]
        assert accepted == [True] * 10 + [False] * 2  # a full buffer drops, and counts, at once
        sender.start()
        while sender.queue.qsize() != 6:  # the drainer took a batch of 4 and holds it
            await asyncio.sleep(0.01)
        await sender.close(timeout_s=0.2)
        await producer.stop()

    asyncio.run(scenario())
    assert counted(topic, "lost") == 12 and counted(topic, "sent") == 0
