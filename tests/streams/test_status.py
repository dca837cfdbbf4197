"""`kafka_status`: dead letters per tenant and the worker group's lag on the real broker; an absent broker is named."""

from __future__ import annotations

import json

import pytest
from kafka import KafkaProducer

from core.contracts import DeadLetter
from streams.embedded_broker import free_port
from streams.status import kafka_status
from streams.topics import DEAD_LETTER, PRODUCT_EVENTS

pytestmark = pytest.mark.integration


def send_one(settings, logical: str, key: bytes, value: bytes) -> None:
    # One producer and flush per record: Tansu reports a batch's end offset as its base + 1, which would hide lag.
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    producer.send(settings.topic(logical), key=key, value=value)
    producer.flush()
    producer.close()


def test_dead_letters_are_counted_per_tenant_and_lag_from_the_start(settings):
    for key in ("acme:p1", "acme:p2", "globex:g1"):
        value = DeadLetter(topic="t", key=key, payload="{}", error="x", attempts=1).model_dump_json().encode()
        send_one(settings, DEAD_LETTER.name, key.encode(), value)
    send_one(settings, DEAD_LETTER.name, b"", b"not a dead letter")  # no tenant to be found: counted under "?"
    for pid in ("n1", "n2"):  # two events no worker has consumed: a lag of 2
        send_one(settings, PRODUCT_EVENTS.name, f"acme:{pid}".encode(), json.dumps({"id": pid}).encode())

    status = kafka_status(settings)

    assert status == {
        "reachable": True,
        "group": settings.app_id,
        "topic": settings.topic(PRODUCT_EVENTS.name),
        "lag": 2,
        "lag_error": None,
        "dead_letters": 4,
        "dead_letters_by_tenant": {"acme": 2, "globex": 1, "?": 1},
        "error": None,
    }


def test_an_absent_broker_is_reported_not_raised(settings):
    absent = settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{free_port()}", "kafka_ack_timeout_s": 2})

    status = kafka_status(absent)

    assert status["reachable"] is False and "unreachable" in status["error"]
    assert status["lag"] is None and status["dead_letters"] is None and status["dead_letters_by_tenant"] == {}
    assert status["topic"] == settings.topic(PRODUCT_EVENTS.name) and status["group"] == settings.app_id
