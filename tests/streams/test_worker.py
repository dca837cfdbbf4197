"""The real worker process on the real broker and Postgres: dead letters, crash and restart faults."""

from __future__ import annotations

import asyncio

import json
import signal

import numpy as np
import pytest
from kafka import KafkaConsumer, KafkaProducer
from PIL import Image
from sqlalchemy import func, select, text

from db.embedded import EmbeddedPostgres
from db.migrate import upgrade
from db.models import Item, Product
from db.session import create_db_engine, session_factory
from db.tenants import create_tenant
from streams.topics import DEAD_LETTER, PRODUCT_EVENTS
from tests.helpers import settings_env, wait_for
from vitrine import procs
from vitrine.image_server import ImageServer

pytestmark = pytest.mark.integration


def event(pid: str, url: str, version: int = 1) -> dict:
    return {"event_id": f"{pid}-v{version}", "tenant_id": "acme", "type": "product.upserted",
            "product": {"id": pid, "version": version, "title": pid, "image_urls": [url]}}


def produce(settings, messages: list[tuple[str, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5)
    for key, value in messages:
        producer.send(settings.topic(PRODUCT_EVENTS.name), key=key.encode(), value=value)
    producer.flush()
    producer.close()


def as_message(e: dict) -> tuple[str, bytes]:
    return f"acme:{e['product']['id']}", json.dumps(e).encode()


@pytest.fixture
def catalog_images(tmp_path):
    """300 small, distinct product images on a local server."""
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    root.mkdir()
    for i in range(300):
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).resize((96, 96)).save(root / f"{i}.png")
    with ImageServer(root) as server:
        yield server


def spawn_worker(settings, tmp_path, name="worker"):
    return procs.spawn(["worker"], settings_env(settings), tmp_path / f"{name}.log")


def counts(sessions) -> tuple[int, int, int]:
    """(products indexed, items, images with more than one item) - the exactly-once check."""
    with sessions() as s:
        indexed = s.scalar(select(func.count()).select_from(Product).where(Product.indexed_at.is_not(None)))
        items = s.scalar(select(func.count()).select_from(Item))
        dup = s.scalar(text("SELECT count(*) FROM (SELECT image_id FROM items GROUP BY image_id "
                            "HAVING count(*) > 1) d"))
    return indexed, items, dup


def test_unprocessable_events_go_to_the_dead_letter_topic_and_the_partition_moves_on(
        settings, sessions, edge_server, tmp_path):
    with sessions.begin() as s:
        create_tenant(s, "Acme", "acme")
    good = event("good", f"{edge_server.base}/img/bus-front.jpg")
    flaky = event("flaky", f"{edge_server.base}/unavailable.jpg")
    # All on one key, so one partition, in this order: the good event comes after two bad ones.
    produce(settings, [("acme:x", b"{not json"), ("acme:x", json.dumps(flaky).encode()),
                       ("acme:x", json.dumps(good).encode())])
    consumer = KafkaConsumer(settings.topic(DEAD_LETTER.name), bootstrap_servers=settings.kafka_bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=1000)
    letters: list[dict] = []

    def two_letters():
        letters.extend(json.loads(m.value) for m in consumer)
        return len(letters) >= 2
    worker = spawn_worker(settings, tmp_path)
    try:
        wait_for(lambda: counts(sessions)[0] == 1, 90, what="the good event indexed")
        wait_for(two_letters, 60, what="two dead letters")  # the flaky one after its retries
    finally:
        procs.stop(worker)
        consumer.close()
    assert len(letters) == 2
    invalid, failed = letters
    assert invalid["payload"] == "{not json" and invalid["error"].startswith("invalid event") \
        and invalid["attempts"] == 1
    assert json.loads(failed["payload"]) == flaky and failed["attempts"] == 4
    assert "HTTP 503" in failed["error"] and failed["key"] == "acme:x"
    assert edge_server.hits["/unavailable.jpg"] == 4


def test_worker_killed_mid_stream_indexes_every_product_exactly_once(settings, sessions, catalog_images, tmp_path):
    with sessions.begin() as s:
        create_tenant(s, "Acme", "acme")
    produce(settings, [as_message(event(f"p{i}", catalog_images.url(f"{i}.png"))) for i in range(300)])
    worker = spawn_worker(settings, tmp_path, "worker1")
    try:
        wait_for(lambda: counts(sessions)[0] >= 30, 120, interval_s=0.05, what="some products indexed")
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    at_kill = counts(sessions)[0]
    assert at_kill < 300, "the kill came too late to test anything"
    worker = spawn_worker(settings, tmp_path, "worker2")
    try:
        wait_for(lambda: counts(sessions)[0] == 300, 180, what="all 300 products indexed after restart")
    finally:
        procs.stop(worker)
    assert counts(sessions) == (300, 300, 0)


def test_postgres_restart_during_ingestion_loses_and_duplicates_nothing(settings, catalog_images, tmp_path,
                                                                        state_dir):
    pg = EmbeddedPostgres(state_dir / f"own-pg-{tmp_path.name}").start()  # a server of our own, to restart
    try:
        upgrade(pg.url)
        engine = create_db_engine(pg.url)
        sessions = session_factory(engine)
        with sessions.begin() as s:
            create_tenant(s, "Acme", "acme")
        local = settings.model_copy(update={"database_url": pg.url})
        produce(local, [as_message(event(f"p{i}", catalog_images.url(f"{i}.png"))) for i in range(200)])
        worker = spawn_worker(local, tmp_path)
        try:
            wait_for(lambda: counts(sessions)[0] >= 20, 120, interval_s=0.05, what="some products indexed")
            engine.dispose()
            pg.stop()
            pg.start()
            wait_for(lambda: counts(sessions)[0] == 200, 180, what="all 200 products indexed after the restart")
        finally:
            procs.stop(worker)
        assert counts(sessions) == (200, 200, 0)
        engine.dispose()
    finally:
        pg.stop()


def test_the_worker_consumer_fetch_wait_is_short(settings):
    # Tansu holds a fetch for the whole wait even when data arrives; faust hard-codes 1500 ms.
    from streams.faust_transport import FETCH_MAX_WAIT_MS
    from streams.worker import create_worker

    async def build():
        app = create_worker(settings)
        thread = app.consumer._new_consumer_thread()
        consumer = thread._create_worker_consumer(app.transport)
        await consumer.stop()  # never started: closes its client
        return consumer._fetch_max_wait_ms
    assert asyncio.run(build()) == FETCH_MAX_WAIT_MS <= 100


def test_notices_are_stamped_when_published_after_the_write_not_when_built():
    """indexed_at is the moment the chunk was committed (the notice goes out then), so the bench's
    event-to-indexed latency is not read low by the time the write took."""
    from datetime import timedelta

    from core.contracts import ProductIndexed, utcnow
    from streams.worker import process_batch

    class SlowWriteIndexer:  # the Indexer's contract: on_result(i, notice) after the chunk is written
        async def handle_batch(self, events, on_result):
            notices = [ProductIndexed(tenant_id=e.tenant_id, product_id=e.product.id, version=e.product.version,
                                      event_id=e.event_id, status="indexed", items=1) for e in events]
            await asyncio.sleep(0.2)  # the write
            for i, n in enumerate(notices):
                await on_result(i, n)
            return notices

    published = []

    async def publish(key, notice):
        published.append((key, notice, utcnow()))

    async def dead_letter(*args):
        raise AssertionError(f"nothing should be dead-lettered: {args}")

    before = utcnow()
    messages = [(b"acme:p1", json.dumps(event("p1", "http://img/1.jpg")).encode()),
                (b"acme:p2", json.dumps(event("p2", "http://img/2.jpg")).encode())]
    asyncio.run(process_batch(SlowWriteIndexer(), messages, publish, dead_letter))
    assert [(k, n.product_id) for k, n, _ in published] == [(b"acme:p1", "p1"), (b"acme:p2", "p2")]
    for _, notice, sent_at in published:
        assert before + timedelta(seconds=0.2) <= notice.indexed_at <= sent_at
