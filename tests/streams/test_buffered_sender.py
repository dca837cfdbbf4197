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


EVENT = InteractionEvent(event_id="e", tenant_id="acme", type="exposure", user_id="u")


def fresh_topic() -> str:
    """A topic name of the test's own, so the module-wide sent/lost counters start at 0 for it."""
    return f"t{uuid.uuid4().hex[:8]}.storefront.interactions"


class _RecordingProducer:
    """Stands in for the Kafka producer at the process edge: records each send_many batch."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    async def send_many(self, topic: str, events) -> None:
        await asyncio.sleep(0.02)  # the broker's acknowledgement takes a while: a cancel could land meanwhile
        self.batches.append([key for key, _ in events])


def test_events_within_the_linger_go_out_in_one_batch():
    """The drainer waits `linger_s` after a batch's first event: one produce request, not one per event."""
    topic = fresh_topic()

    async def scenario() -> list[list[str]]:
        producer = _RecordingProducer()
        sender = BufferedSender(producer, topic, linger_s=0.5)
        sender.start()
        sender.submit("acme:u0", EVENT)
        await asyncio.sleep(0.05)  # the drainer has taken the first event and lingers
        for i in range(1, 10):
            sender.submit(f"acme:u{i}", EVENT)
        deadline = asyncio.get_running_loop().time() + 30
        while counted(topic, "sent") < 10 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        await sender.close()
        return producer.batches

    batches = asyncio.run(scenario())
    assert batches == [[f"acme:u{i}" for i in range(10)]]


def test_close_sends_a_lingering_batch_at_once_and_loses_nothing():
    """close() cuts the linger short: a 30 s linger must not turn a 2 s shutdown into lost events."""
    topic = fresh_topic()

    async def scenario() -> list[list[str]]:
        producer = _RecordingProducer()
        sender = BufferedSender(producer, topic, linger_s=30)
        sender.start()
        for i in range(3):
            sender.submit(f"acme:u{i}", EVENT)
        await asyncio.sleep(0.05)  # lingering
        await sender.close(timeout_s=2)
        return producer.batches

    assert asyncio.run(scenario()) == [["acme:u0", "acme:u1", "acme:u2"]]
    assert counted(topic, "sent") == 3 and counted(topic, "lost") == 0


def test_close_sends_a_single_lingering_event_the_queue_being_empty():
    """The event the drainer lingers on is off the queue: close() must still wait for it, not report drained."""
    topic = fresh_topic()

    async def scenario() -> list[list[str]]:
        producer = _RecordingProducer()
        sender = BufferedSender(producer, topic, linger_s=30)
        sender.start()
        sender.submit("acme:u0", EVENT)
        await asyncio.sleep(0.05)  # taken off the queue, lingering
        assert sender.queue.empty()
        await sender.close(timeout_s=2)
        assert sender._task.done()  # no drainer left running (a cancel racing the linger's end can be lost)
        return producer.batches

    assert asyncio.run(scenario()) == [["acme:u0"]]
    assert counted(topic, "sent") == 1 and counted(topic, "lost") == 0


def test_a_full_batch_waiting_goes_out_without_lingering():
    """A backlog (e.g. after an outage) is sent in full batches back to back, not one batch per linger."""
    topic = fresh_topic()

    async def scenario() -> list[list[str]]:
        producer = _RecordingProducer()
        sender = BufferedSender(producer, topic, batch=4, linger_s=30)
        for i in range(8):
            sender.submit(f"acme:u{i}", EVENT)
        sender.start()
        deadline = asyncio.get_running_loop().time() + 10
        while len(producer.batches) < 2 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        batches = list(producer.batches)
        await sender.close(timeout_s=1)
        return batches

    assert asyncio.run(scenario()) == [[f"acme:u{i}" for i in range(4)], [f"acme:u{i}" for i in range(4, 8)]]
