"""Every topic vitrine uses, with its partition count, in one place."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from core.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicSpec:
    name: str  # logical name; the real one carries settings.topic_prefix
    partitions: int | None  # None = settings.topic_partitions
    doc: str


PRODUCT_EVENTS = TopicSpec(
    "catalog.product-events", None, "Catalog upserts/deletes, keyed tenant:product_id (per-product order)"
)
DEAD_LETTER = TopicSpec("catalog.dead-letter", 1, "Events that could not be processed, with reason and attempts")
PRODUCT_INDEXED = TopicSpec(
    "catalog.product-indexed", 1, "One notice per successfully indexed product (cache invalidation, tests)"
)
INTERACTIONS = TopicSpec(
    "storefront.interactions", None, "Exposures, clicks, add-to-carts, purchases, keyed tenant:user_id"
)

ALL_TOPICS = (PRODUCT_EVENTS, DEAD_LETTER, PRODUCT_INDEXED, INTERACTIONS)


def partitions_of(spec: TopicSpec, settings: Settings) -> int:
    return spec.partitions or settings.topic_partitions


def ensure_topics(settings: Settings, timeout_s: float = 15.0) -> list[str]:
    """Create every topic that does not exist yet (brokers may auto-create with the wrong partition count)."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id=f"{settings.app_id}-admin",
        request_timeout_ms=int(timeout_s * 1000),
    )
    try:
        existing = set(admin.list_topics())
        wanted = [
            NewTopic(settings.topic(t.name), partitions_of(t, settings), 1)
            for t in ALL_TOPICS
            if settings.topic(t.name) not in existing
        ]
        created = []
        for topic in wanted:  # one by one: a concurrent creator must not fail the whole batch
            try:
                admin.create_topics([topic], timeout_ms=int(timeout_s * 1000))
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass
        if created:
            log.info("created topics %s", ", ".join(created))
        return created
    finally:
        admin.close()
