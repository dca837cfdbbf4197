"""create_worker(settings): the faust app and its ingest agent.

Delivery is at least once (Tansu has no transactions): the offset is committed after the event
is applied, and every write is idempotent (see db/catalog.py), so a redelivery changes nothing.
An event that still fails after its retries goes to the dead-letter topic with its original
payload, and the partition moves on.
"""

from __future__ import annotations

import asyncio
import logging

import faust
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, OperationalError

from db.session import create_db_engine, session_factory
from db.vector_index import ensure_vector_index
from streams.events import CatalogEvent, DeadLetter
from streams.image_fetch import ImageFetcher
from streams.ingest import Indexer, ItemPolicy, TransientError
from streams.topics import DEAD_LETTER, PRODUCT_EVENTS, PRODUCT_INDEXED
from vitrine.components import build_detector, build_embedder
from vitrine.settings import Settings

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 4
BACKOFF_S = (0.5, 2.0, 5.0)


def create_worker(settings: Settings) -> faust.App:
    """The faust app for resolved settings; run it with `faust.Worker(app).execute_from_commandline()`."""
    app = faust.App(
        settings.app_id,
        broker=",".join(f"kafka://{h}" for h in settings.kafka_bootstrap.split(",")),
        store="memory://",
        value_serializer="raw",
        key_serializer="raw",
        # Tansu (and small clusters) rejoin fast with short sessions: ~6 s to ready instead of 30 s.
        broker_session_timeout=6,
        broker_heartbeat_interval=1,
        broker_commit_every=100,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        topic_replication_factor=1,
        topic_partitions=settings.topic_partitions,
        web_enabled=True,
        web_host="127.0.0.1",
        web_port=settings.worker_web_port,
        producer_acks=-1,
    )
    events = app.topic(settings.topic(PRODUCT_EVENTS.name), value_serializer="raw", key_serializer="raw")
    dead_letters = app.topic(settings.topic(DEAD_LETTER.name), value_serializer="raw", key_serializer="raw")
    indexed = app.topic(settings.topic(PRODUCT_INDEXED.name), value_serializer="raw", key_serializer="raw")

    embedder = build_embedder(settings)
    detector = build_detector(settings)
    engine = create_db_engine(settings.database_url)
    sessions = session_factory(engine)

    @app.task
    async def prepare() -> None:
        # Load models and make sure the model's vector index exists before the first event.
        def _prepare():
            embedder.load()
            detector.load()
            with engine.begin() as conn:
                ensure_vector_index(conn, embedder.model_key, embedder.dim)
        await asyncio.to_thread(_prepare)
        log.info("worker ready: embedder %s (dim %d), detector %s", embedder.model_key, embedder.dim,
                 detector.name)

    @app.agent(events)
    async def ingest(stream):
        fetcher = ImageFetcher(timeout_s=settings.fetch_timeout_s, max_bytes=settings.max_image_bytes,
                               allow_private=settings.fetch_allow_private)
        indexer = Indexer(
            sessions=sessions, embedder=embedder, detector=detector, fetcher=fetcher,
            policy=ItemPolicy(settings.detect_min_score, settings.detect_min_area, settings.detect_max_items,
                              settings.detect_iou_threshold),
            max_image_bytes=settings.max_image_bytes, max_image_pixels=settings.max_image_pixels,
        )
        try:
            async for key, value in stream.items():
                notice = await _process(indexer, key, value, dead_letters, events.get_topic_name())
                if notice is not None:
                    await indexed.send(key=key, value=notice.model_dump_json().encode())
        finally:
            await fetcher.aclose()

    return app


async def _process(indexer: Indexer, key: bytes | None, value: bytes, dead_letters, topic: str):
    """Apply one raw event with retries; dead-letter it if it cannot be applied."""
    try:
        event = CatalogEvent.model_validate_json(value)
    except ValidationError as exc:
        await _dead_letter(dead_letters, topic, key, value, f"invalid event: {exc.errors(include_url=False)}", 1)
        return None
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            return await indexer.handle(event)
        except (TransientError, OperationalError, DBAPIError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            if attempt < MAX_ATTEMPTS:
                delay = BACKOFF_S[min(attempt - 1, len(BACKOFF_S) - 1)]
                log.warning("event %s attempt %d failed (%s); retrying in %.1fs", event.event_id, attempt,
                            error.splitlines()[0], delay)
                await asyncio.sleep(delay)
        except Exception as exc:  # a bug or an unforeseen input: keep the partition moving
            log.exception("event %s failed", event.event_id)
            error = f"{type(exc).__name__}: {exc}"
            break
    await _dead_letter(dead_letters, topic, key, value, error, attempt)
    return None


async def _dead_letter(dead_letters, topic: str, key: bytes | None, value: bytes, error: str, attempts: int):
    log.error("dead-lettering a message of %s (key %r) after %d attempt(s): %s", topic, key, attempts,
              error[:300])
    record = DeadLetter(topic=topic, key=key.decode(errors="replace") if key else None,
                        payload=value.decode(errors="replace"), error=error, attempts=attempts)
    await dead_letters.send(key=key, value=record.model_dump_json().encode())
