"""The dead-letter topic read back: parsing its records, picking the newest, selecting and re-sending replays.

Every dead letter names the topic its event came from (`DeadLetter.topic`); a replay sends it back
there, and only to a topic vitrine consumes (catalog events, storefront interactions): an interaction
re-sent to the catalog topic would only fail again.

Reads and sends raise `streams.sync_producer.BrokerUnreachable`; the callers (the CLI, the status
probe) decide what an unreachable broker means for them.
"""

from __future__ import annotations

import contextlib
import json
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from pydantic import ValidationError

from core.contracts import DeadLetter
from core.settings import Settings
from streams.sync_producer import SyncProducer, read_topic
from streams.topics import DEAD_LETTER, INTERACTIONS, PRODUCT_EVENTS

REPLAYABLE = (PRODUCT_EVENTS, INTERACTIONS)  # the topics the worker consumes


@dataclass(frozen=True)
class DeadLetterRecord:
    """One record of the dead-letter topic, parsed as far as it goes."""

    partition: int
    offset: int
    key: str | None
    failed_at: str | None
    attempts: int | None
    error: str
    payload: str
    tenant_id: str | None
    event_id: str | None
    topic: str | None = None  # where the event came from; None for a record that is not a dead letter


@dataclass(frozen=True)
class ReplaySelection:
    """The dead letters to re-send (one per distinct key and payload) and the asked-for event ids not found."""

    records: list[DeadLetterRecord]
    missing: set[str]


def parse_dead_letter(partition: int, offset: int, key: bytes | None, value: bytes) -> DeadLetterRecord:
    """One raw record of the dead-letter topic as a `DeadLetterRecord`; never raises on a malformed value."""
    try:
        dl = DeadLetter.model_validate_json(value)
    except ValidationError:  # written by something else: keep it visible rather than hide it
        return DeadLetterRecord(
            partition,
            offset,
            key.decode(errors="replace") if key else None,
            None,
            None,
            "unreadable dead-letter record",
            value.decode(errors="replace"),
            None,
            None,
        )
    tenant_id = event_id = None
    with contextlib.suppress(ValueError):
        original = json.loads(dl.payload)
        if isinstance(original, dict):
            tenant_id, event_id = original.get("tenant_id"), original.get("event_id")
    if dl.key and ":" in dl.key:  # the key is authoritative: tenant:product_id
        tenant_id = dl.key.split(":", 1)[0]
    return DeadLetterRecord(
        partition,
        offset,
        dl.key,
        dl.failed_at.isoformat(timespec="seconds"),
        dl.attempts,
        dl.error,
        dl.payload,
        str(tenant_id) if tenant_id else None,
        str(event_id) if event_id else None,
        dl.topic,
    )


def iter_dead_letters(settings: Settings) -> Iterator[DeadLetterRecord]:
    """Every record of the dead-letter topic, parsed; raises BrokerUnreachable."""
    for r in read_topic(
        settings.kafka_bootstrap,
        settings.topic(DEAD_LETTER.name),
        timeout_s=settings.kafka_ack_timeout_s,
        client_id=f"{settings.app_id}-cli",
    ):
        yield parse_dead_letter(r.partition, r.offset, r.key, r.value)


def newest_dead_letters(
    records: Iterable[DeadLetterRecord], limit: int, tenant: str | None = None
) -> tuple[list[DeadLetterRecord], int]:
    """(the newest `limit` of the tenant's records, oldest first; how many the tenant has in all)."""
    shown: deque[DeadLetterRecord] = deque(maxlen=limit)  # the newest N, without holding the whole topic
    total = 0
    for record in records:
        if tenant is None or record.tenant_id == tenant:
            shown.append(record)
            total += 1
    return sorted(shown, key=lambda r: (r.failed_at or "", r.partition, r.offset)), total


def select_replay(
    records: Iterable[DeadLetterRecord], tenant: str | None = None, event_ids: Iterable[str] = ()
) -> ReplaySelection:
    """The records of `tenant` (all if None) with one of `event_ids` (any if empty), each key+payload once."""
    wanted = set(event_ids)
    # Deduplicated: an event dead-lettered twice (e.g. after an earlier replay) is re-sent once.
    selected: dict[tuple[str | None, str], DeadLetterRecord] = {}
    for record in records:
        if (tenant is None or record.tenant_id == tenant) and (not wanted or record.event_id in wanted):
            selected.setdefault((record.key, record.payload), record)
    missing = wanted - {r.event_id for r in selected.values()}
    return ReplaySelection(list(selected.values()), missing)


def replay_topic(settings: Settings, record: DeadLetterRecord) -> str | None:
    """The topic to re-send `record` to: the one it came from, if vitrine consumes it; else None.

    A source topic under another prefix (the deployment's prefix changed since) maps to the same
    logical topic under this one: the dead letters read here are this deployment's.
    """
    source = record.topic or ""
    for spec in REPLAYABLE:
        if source in (settings.topic(spec.name), spec.name) or source.endswith(f".{spec.name}"):
            return settings.topic(spec.name)
    return None


def replay_plan(
    settings: Settings, records: Iterable[DeadLetterRecord]
) -> tuple[dict[str, list[DeadLetterRecord]], list[DeadLetterRecord]]:
    """({destination topic: its records, in order}, the records no topic vitrine consumes would take)."""
    plan: dict[str, list[DeadLetterRecord]] = {}
    unroutable: list[DeadLetterRecord] = []
    for record in records:
        topic = replay_topic(settings, record)
        if topic is None:
            unroutable.append(record)
        else:
            plan.setdefault(topic, []).append(record)
    return plan, unroutable


def resend(settings: Settings, plan: dict[str, list[DeadLetterRecord]]) -> dict[str, int]:
    """Produce each record's original payload with its original key to its topic; raises BrokerUnreachable.

    Returns, per topic, how many the broker acknowledged.
    """
    sent: dict[str, int] = {}
    with SyncProducer(
        settings.kafka_bootstrap, client_id=f"{settings.app_id}-replay", timeout_s=settings.kafka_ack_timeout_s
    ) as producer:
        for topic, records in plan.items():
            for record in records:
                producer.send(topic, record.key, record.payload.encode())
            sent[topic] = len(records)
        producer.flush()  # the counts must only cover what the broker acknowledged
    return sent
