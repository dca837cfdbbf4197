"""The real worker process on the real broker and Postgres: dead letters, crash and restart faults."""

from __future__ import annotations

import asyncio
import json
import signal
import time

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
from streams.image_fetch import ATTEMPTS
from streams.outage import OUTAGE_MAX_WAIT_S
from streams.topics import DEAD_LETTER, PRODUCT_EVENTS
from tests.helpers import settings_env, wait_for
from vitrine import procs
from vitrine.image_server import ImageServer

pytestmark = pytest.mark.integration


def event(pid: str, url: str, version: int = 1) -> dict:
    return {
        "event_id": f"{pid}-v{version}",
        "tenant_id": "acme",
        "type": "product.upserted",
        "product": {"id": pid, "version": version, "title": pid, "image_urls": [url]},
    }


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
        dup = s.scalar(
            text("SELECT count(*) FROM (SELECT image_id FROM items GROUP BY image_id HAVING count(*) > 1) d")
        )
    return indexed, items, dup


def test_unprocessable_events_go_to_the_dead_letter_topic_and_the_partition_moves_on(
    settings, sessions, edge_server, tmp_path
):
    with sessions.begin() as s:
        create_tenant(s, "Acme", "acme")
    good = event("good", f"{edge_server.base}/img/bus-front.jpg")
    flaky = event("flaky", f"{edge_server.base}/flaky/bus-wide.jpg?fail={ATTEMPTS}")
    # All on one key, so one partition, in this order: the good event comes after two bad ones.
    produce(
        settings,
        [("acme:x", b"{not json"), ("acme:x", json.dumps(flaky).encode()), ("acme:x", json.dumps(good).encode())],
    )
    consumer = KafkaConsumer(
        settings.topic(DEAD_LETTER.name),
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=1000,
    )
    letters: list[dict] = []

    def flaky_image():
        with sessions() as s:
            return s.execute(
                text("SELECT status, failure_reason FROM product_images WHERE url LIKE '%/flaky/%'")
            ).one_or_none()

    worker = procs.spawn(
        ["worker"], {**settings_env(settings), "VITRINE_IMAGE_RETRY_AFTER_S": "1"}, tmp_path / "worker.log"
    )
    try:
        # The flaky product is indexed too: a 503 fails its image (left pending), not the product...
        wait_for(lambda: counts(sessions)[0] == 2, 90, what="the good and the flaky event indexed")
        wait_for(lambda: letters.extend(json.loads(m.value) for m in consumer) or letters, 30, what="a dead letter")
        # ... and the worker's sweep fetches the image again, with no new event.
        wait_for(lambda: flaky_image().status == "ok", 30, what="the pending image retried")
    finally:
        procs.stop(worker)
        consumer.close()
    [invalid] = letters
    assert (
        invalid["payload"] == "{not json"
        and invalid["error"].startswith("invalid event")
        and invalid["attempts"] == 1
        and invalid["key"] == "acme:x"
    )
    # The fetcher's tries, then one by the sweep: the product itself was never retried.
    assert edge_server.hits["/flaky/bus-wide.jpg"] == ATTEMPTS + 1 and flaky_image().failure_reason is None


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


def test_postgres_restart_during_ingestion_loses_and_duplicates_nothing(settings, catalog_images, tmp_path, state_dir):
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
            notices = [
                ProductIndexed(
                    tenant_id=e.tenant_id,
                    product_id=e.product.id,
                    version=e.product.version,
                    event_id=e.event_id,
                    status="indexed",
                    items=1,
                )
                for e in events
            ]
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
    messages = [
        (b"acme:p1", json.dumps(event("p1", "http://img/1.jpg")).encode()),
        (b"acme:p2", json.dumps(event("p2", "http://img/2.jpg")).encode()),
    ]
    asyncio.run(process_batch(SlowWriteIndexer(), messages, publish, dead_letter))
    assert [(k, n.product_id) for k, n, _ in published] == [(b"acme:p1", "p1"), (b"acme:p2", "p2")]
    for _, notice, sent_at in published:
        assert before + timedelta(seconds=0.2) <= notice.indexed_at <= sent_at


# --- one bad event fails alone (#13) -----------------------------------------------------------------


def interaction(tenant: str, event_id: str, user: str, product: str, **extra) -> tuple[bytes, bytes]:
    """(key, value) of a click as the API produces it to the interactions topic."""
    body = {"event_id": event_id, "tenant_id": tenant, "type": "click", "user_id": user, "product_id": product}
    return f"{tenant}:{user}".encode(), json.dumps(body | extra).encode()


def record(sessions, messages: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes, str, int]]:
    """Run the interactions agent's batch on the real database; the dead letters it sent."""
    from streams.worker import record_batch

    letters = []

    async def dead_letter(key, value, error, attempts):
        letters.append((key, value, error, attempts))

    asyncio.run(record_batch(sessions, messages, 3 * 86400, dead_letter))
    return letters


@pytest.fixture
def two_shops(sessions):
    with sessions.begin() as s:
        create_tenant(s, "Acme", "acme")
        create_tenant(s, "Globex", "globex")
    return sessions


def stored_interactions(sessions) -> list[str]:
    with sessions() as s:
        return sorted(s.scalars(text("SELECT event_id FROM interaction_events")))


def test_an_interaction_the_database_refuses_fails_alone_in_a_mixed_tenant_batch(two_shops):
    """Before: the whole batch (both tenants) was retried for 8 s, then every event dead-lettered with an
    error that listed the batch's rows, so acme's dead letters showed globex's users and products."""
    with two_shops.begin() as s:  # a row Postgres refuses, whatever the contract let through
        s.execute(text("ALTER TABLE interaction_events ADD CONSTRAINT no_poison CHECK (product_id <> 'poison')"))
    batch = [interaction("globex", f"g{i}", f"globex-user-{i}", f"globex-product-{i}") for i in range(6)]
    batch.insert(3, interaction("acme", "a-bad", "acme-user-bad", "poison"))
    batch += [interaction("acme", f"a{i}", f"acme-user-{i}", f"acme-product-{i}") for i in range(5)]

    [(key, value, error, attempts)] = record(two_shops, batch)
    assert key == b"acme:acme-user-bad" and value == batch[3][1]  # the original message, for a replay
    assert error.startswith("CheckViolation:") and "no_poison" in error
    assert "globex" not in error and "acme-user-0" not in error  # no other event's data
    assert 1 < attempts <= 5  # split until it stood alone: log2(12) rounds
    assert stored_interactions(two_shops) == sorted([f"g{i}" for i in range(6)] + [f"a{i}" for i in range(5)])


def test_an_old_click_breaks_no_later_batch_of_its_product(two_shops):
    """The issue's reproduction: one click dated long ago, then every batch with a click on that product
    failed as a whole (the decay underflowed), dead-lettering other tenants' events with it."""
    assert record(two_shops, [interaction("acme", "old", "u1", "p1", occurred_at="1971-01-01T00:00:00Z")]) == []
    later = [interaction("acme", "new", "u2", "p1"), interaction("globex", "g", "gu", "gp")]
    assert record(two_shops, later) == []
    assert stored_interactions(two_shops) == ["g", "new", "old"]
    with two_shops() as s:
        score = s.scalar(text("SELECT score FROM product_popularity WHERE tenant_id = 'acme' AND product_id = 'p1'"))
    assert score == pytest.approx(1.0, abs=1e-6)  # the fresh click; the 1971 one decayed to nothing


def test_a_catalog_event_that_fails_with_its_chunk_is_tried_alone_and_only_it_is_dead_lettered(monkeypatch):
    """A failure of a whole chunk (a model error) came back for every event of it: all were dead-lettered
    with the chunk's error. Now the last try runs each event alone; only the one that fails alone goes."""
    from tenacity import wait_none

    from core.contracts import ProductIndexed
    from streams import worker

    monkeypatch.setattr(worker, "BACKOFF", wait_none())  # the retries' timing is not what is tested here

    class ChunkFailingIndexer:  # the Indexer's contract: one result per event, exceptions as results
        async def handle_batch(self, events, on_result):
            if any(e.product.id == "poison" for e in events):
                return [RuntimeError(f"model failed on {[e.key for e in events]}")] * len(events)
            notices = [
                ProductIndexed(
                    tenant_id=e.tenant_id, product_id=e.product.id, version=1, event_id=e.event_id, status="indexed"
                )
                for e in events
            ]
            for i, n in enumerate(notices):
                await on_result(i, n)
            return notices

    published, letters = [], []

    async def publish(key, notice):
        published.append(key)

    async def dead_letter(key, value, error, attempts):
        letters.append((key, error, attempts))

    def upsert(tenant: str, pid: str) -> tuple[bytes, bytes]:
        e = event(pid, "http://img.example/1.jpg") | {"tenant_id": tenant}
        return f"{tenant}:{pid}".encode(), json.dumps(e).encode()

    batch = [upsert("globex", "g1"), upsert("acme", "poison"), upsert("acme", "a1")]
    asyncio.run(worker.process_batch(ChunkFailingIndexer(), batch, publish, dead_letter))
    assert sorted(published) == [b"acme:a1", b"globex:g1"]
    [(key, error, attempts)] = letters
    assert key == b"acme:poison" and attempts == worker.MAX_ATTEMPTS
    assert error == "RuntimeError: model failed on ['acme:poison']"  # its own failure, not its chunk's


# --- outages are waits (#13) -------------------------------------------------------------------------

OUTAGE_S = 10  # longer than the old retry budget: 4 attempts, 6.5-8 s of backoff, then dead letters


def test_a_postgres_outage_longer_than_the_retries_is_waited_out_and_dead_letters_nothing(
    settings, catalog_images, tmp_path, state_dir, monkeypatch
):
    """Before: products that arrived during an outage of more than ~8 s were dead-lettered and never came back."""
    from typer.testing import CliRunner

    from streams.status import worker_health
    from vitrine.cli import app

    pg = EmbeddedPostgres(state_dir / f"own-pg-{tmp_path.name}").start()  # a server of our own, to stop
    try:
        upgrade(pg.url)
        engine = create_db_engine(pg.url)
        sessions = session_factory(engine)
        with sessions.begin() as s:
            create_tenant(s, "Acme", "acme")
        local = settings.model_copy(update={"database_url": pg.url})
        for name, value in settings_env(local).items():
            monkeypatch.setenv(name, value)
        produce(local, [as_message(event(f"p{i}", catalog_images.url(f"{i}.png"))) for i in range(10)])
        worker = spawn_worker(local, tmp_path)
        try:
            wait_for(lambda: counts(sessions)[0] == 10, 120, what="the first 10 products indexed")
            engine.dispose()
            pg.stop()
            stopped = time.monotonic()
            # 30 more products arrive while the database is away: the worker takes them and must wait.
            produce(local, [as_message(event(f"p{i}", catalog_images.url(f"{i}.png"))) for i in range(10, 40)])
            since = wait_for(lambda: worker_health(local)["database_down_since"], OUTAGE_S, what="the outage reported")
            status = CliRunner().invoke(app, ["status"])
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped)))  # the outage itself: Postgres stays down
            pg.start()
            back = time.monotonic()
            wait_for(lambda: counts(sessions)[0] == 40 or dead_letters(local), 60, what="all 40 products indexed")
            recovered_s = time.monotonic() - back
            wait_for(lambda: worker_health(local)["database_up"], 10, what="the worker to report the database back")
        finally:
            procs.stop(worker)
        assert dead_letters(local) == []
        assert counts(sessions) == (40, 40, 0)  # every product once, none twice
        assert recovered_s < 2 * OUTAGE_MAX_WAIT_S + 10  # noticed within one capped wait, then indexed
        assert status.exit_code == 3, status.output  # 3: a service is unreachable
        assert f"database unreachable since {since}" in status.output
        assert f"worker         waiting for the database since {since}" in status.stdout
        engine.dispose()
    finally:
        pg.stop()


def dead_letters(settings) -> list[dict]:
    """Every dead letter written so far."""
    consumer = KafkaConsumer(
        settings.topic(DEAD_LETTER.name),
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=1000,
    )
    try:
        return [json.loads(m.value) for m in consumer]
    finally:
        consumer.close()


def test_a_redelivered_event_of_an_indexed_product_is_announced_as_indexed(settings, sessions, edge_server):
    """Before: a worker that crashed between the write and the offset commit re-read the event, found its
    version stored and published only `skipped_stale`: the product was never announced as indexed."""
    from core.contracts import CatalogEvent
    from streams.image_fetch import ImageFetcher
    from streams.ingest import Indexer
    from vision.components import build_detector, build_embedder

    with sessions.begin() as s:
        create_tenant(s, "Acme", "acme")
    url = f"{edge_server.base}/img/bus-front.jpg"
    v1, v2 = (CatalogEvent.model_validate(event("p1", url, version)) for version in (1, 2))

    async def main():
        embedder, detector = build_embedder(settings), build_detector(settings)
        embedder.load()
        detector.load()
        fetcher = ImageFetcher(timeout_s=settings.fetch_timeout_s, allow_hosts=frozenset({"127.0.0.1"}))
        indexer = Indexer(sessions=sessions, embedder=embedder, detector=detector, fetcher=fetcher)
        try:
            return [await indexer.handle(e) for e in (v2, v2, v1)]  # indexed, re-delivered, an older version
        finally:
            await fetcher.aclose()

    first, again, older = asyncio.run(main())
    assert (first.status, again.status, older.status) == ("indexed", "indexed", "skipped_stale")
    assert again.items == first.items >= 1 and again.version == 2
