"""Dead letters read back: parsing, picking the newest or the replays (pure), reading and re-sending (real broker)."""

from __future__ import annotations

import json

import pytest
from kafka import KafkaProducer

from core.contracts import DeadLetter
from core.settings import Settings
from streams.dead_letters import (
    DeadLetterRecord,
    iter_dead_letters,
    newest_dead_letters,
    parse_dead_letter,
    replay_plan,
    replay_topic,
    resend,
    select_replay,
)
from streams.embedded_broker import free_port
from streams.sync_producer import BrokerUnreachable
from streams.topics import DEAD_LETTER, INTERACTIONS, PRODUCT_EVENTS
from tests.helpers import dead_letter, read_topic_records


def record(
    tenant: str | None,
    event_id: str | None,
    *,
    offset: int = 0,
    failed_at: str | None = None,
    key: str | None = None,
    payload: str = "{}",
    topic: str | None = None,
) -> DeadLetterRecord:
    return DeadLetterRecord(0, offset, key, failed_at, 1, "boom", payload, tenant, event_id, topic)


# --- parsing -----------------------------------------------------------------------------------------


def test_a_worker_dead_letter_is_parsed_whole():
    key, value = dead_letter("acme", "p1", "e-1")
    parsed = parse_dead_letter(1, 7, key, value)
    assert parsed.partition == 1 and parsed.offset == 7 and parsed.key == "acme:p1"
    assert parsed.failed_at == "2026-01-02T03:04:05+00:00" and parsed.attempts == 3
    assert parsed.error == "ConnectError: image host down"
    assert parsed.tenant_id == "acme" and parsed.event_id == "e-1"
    assert json.loads(parsed.payload)["product"]["id"] == "p1"


def test_the_key_names_the_tenant_even_when_the_payload_says_otherwise():
    value = (
        DeadLetter(
            topic="t",
            key="acme:p1",
            payload=json.dumps({"tenant_id": "globex", "event_id": "e-1"}),
            error="x",
            attempts=1,
        )
        .model_dump_json()
        .encode()
    )
    assert parse_dead_letter(0, 0, b"acme:p1", value).tenant_id == "acme"


def test_a_payload_that_is_not_json_keeps_the_tenant_of_its_key():
    value = DeadLetter(topic="t", key="acme:p1", payload="{not json", error="x", attempts=1).model_dump_json()
    parsed = parse_dead_letter(0, 0, b"acme:p1", value.encode())
    assert parsed.tenant_id == "acme" and parsed.event_id is None and parsed.payload == "{not json"


def test_a_record_written_by_something_else_stays_visible():
    parsed = parse_dead_letter(2, 3, b"k", b"\xffnot a dead letter")
    assert parsed.error == "unreadable dead-letter record" and parsed.key == "k"
    assert parsed.payload == "\ufffdnot a dead letter" and parsed.failed_at is None and parsed.attempts is None
    assert parse_dead_letter(0, 0, None, b"{}").key is None


# --- selecting ---------------------------------------------------------------------------------------


def test_newest_keeps_the_last_n_of_the_tenant_sorted_by_failure_time():
    records = [
        record("acme", "e-1", offset=0, failed_at="2026-01-02T00:00:03"),
        record("globex", "e-2", offset=1, failed_at="2026-01-02T00:00:09"),
        record("acme", "e-3", offset=2, failed_at="2026-01-02T00:00:01"),
        record("acme", "e-4", offset=3, failed_at="2026-01-02T00:00:02"),
    ]
    rows, total = newest_dead_letters(records, limit=2, tenant="acme")
    assert [r.event_id for r in rows] == ["e-3", "e-4"] and total == 3  # the last two read, oldest first
    rows, total = newest_dead_letters(records, limit=10)
    assert [r.event_id for r in rows] == ["e-3", "e-4", "e-1", "e-2"] and total == 4
    assert newest_dead_letters([], limit=5) == ([], 0)


def test_replay_selection_filters_dedupes_and_reports_missing_ids():
    twice = {"key": "acme:p1", "payload": '{"event_id": "e-1"}'}
    records = [
        record("acme", "e-1", offset=0, **twice),
        record("acme", "e-1", offset=5, **twice),
        record("acme", "e-2", key="acme:p2"),
        record("globex", "e-3", key="globex:g1"),
    ]
    everything = select_replay(records)
    assert [(r.event_id, r.offset) for r in everything.records] == [("e-1", 0), ("e-2", 0), ("e-3", 0)]
    assert everything.missing == set()
    acme = select_replay(records, tenant="acme")
    assert [r.event_id for r in acme.records] == ["e-1", "e-2"]
    picked = select_replay(records, tenant="acme", event_ids=["e-2", "e-3", "nope"])
    assert [r.event_id for r in picked.records] == ["e-2"] and picked.missing == {"e-3", "nope"}


def test_each_dead_letter_is_replayed_to_the_topic_it_came_from_and_only_to_one_vitrine_consumes():
    settings = Settings(topic_prefix="shop1.")
    events, interactions = settings.topic(PRODUCT_EVENTS.name), settings.topic(INTERACTIONS.name)
    assert replay_topic(settings, record("acme", "e", topic=events)) == events
    assert replay_topic(settings, record("acme", "e", topic=interactions)) == interactions
    # Written under another prefix (the deployment's changed since) or none: the same logical topic here.
    assert replay_topic(settings, record("acme", "e", topic="old.storefront.interactions")) == interactions
    assert replay_topic(settings, record("acme", "e", topic="catalog.product-events")) == events
    for elsewhere in ("orders", "shop1.catalog.dead-letter", "storefront.interactions-v2", "", None):
        assert replay_topic(settings, record("acme", "e", topic=elsewhere)) is None
    a, b, c = (record("acme", x, topic=t) for x, t in (("a", events), ("b", interactions), ("c", "orders")))
    assert replay_plan(settings, [a, b, c]) == ({events: [a], interactions: [b]}, [c])


# --- on the broker -----------------------------------------------------------------------------------


def produce(settings, logical: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    for key, value in records:
        producer.send(settings.topic(logical), key=key, value=value)
    producer.flush()
    producer.close()


@pytest.mark.integration
def test_iter_reads_every_dead_letter_and_resend_replays_the_originals(settings):
    sent = [dead_letter("acme", "p1", "e-1"), dead_letter("acme", "p2", "e-2"), dead_letter("globex", "g1", "e-3")]
    produce(settings, DEAD_LETTER.name, sent)

    read = list(iter_dead_letters(settings))
    assert sorted(r.event_id for r in read) == ["e-1", "e-2", "e-3"]
    assert {r.key: r.tenant_id for r in read} == {"acme:p1": "acme", "acme:p2": "acme", "globex:g1": "globex"}

    chosen = select_replay(read, tenant="acme").records
    plan, unroutable = replay_plan(settings, chosen)
    events = settings.topic(PRODUCT_EVENTS.name)
    assert list(plan) == [events] and unroutable == []
    assert resend(settings, plan) == {events: 2}
    replayed = dict(read_topic_records(settings.kafka_bootstrap, events))
    assert sorted(replayed) == ["acme:p1", "acme:p2"]
    originals = {DeadLetter.model_validate_json(v).key: DeadLetter.model_validate_json(v).payload for _, v in sent}
    assert all(value.decode() == originals[key] for key, value in replayed.items())  # byte for byte


@pytest.mark.integration
def test_an_empty_topic_reads_as_nothing_and_an_absent_broker_raises(settings):
    assert list(iter_dead_letters(settings)) == []
    absent = settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{free_port()}", "kafka_ack_timeout_s": 2})
    with pytest.raises(BrokerUnreachable, match="unreachable"):
        list(iter_dead_letters(absent))
    with pytest.raises(BrokerUnreachable):
        resend(absent, {"t": [record("acme", "e-1", key="acme:p1")]})
