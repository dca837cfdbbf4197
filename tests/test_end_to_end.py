"""The walking skeleton on real parts: HTTP -> Kafka -> faust worker -> model -> Postgres -> HTTP."""

from __future__ import annotations

import signal

import numpy as np
import pytest
from kafka import KafkaConsumer
from sqlalchemy import select

from db.models import Item, Product, ProductImage
from db.tenants import create_tenant
from streams.embedded_broker import free_port
from streams.topics import PRODUCT_INDEXED
from tests.helpers import settings_env, wait_for
from vitrine import procs
from vitrine.client import CatalogClient, StorefrontClient
from vitrine.sample_catalog import sample_event

pytestmark = pytest.mark.integration


@pytest.fixture
def running(settings, tmp_path):
    """A real `vitrine api` and `vitrine worker` process on the test's broker and database."""
    env = {**settings_env(settings), "VITRINE_API_PORT": str(free_port())}
    worker = procs.spawn(["worker"], env, tmp_path / "worker.log")
    api = procs.spawn(["api"], env, tmp_path / "api.log")
    base = f"http://127.0.0.1:{env['VITRINE_API_PORT']}"
    try:
        procs.wait_http(f"{base}/healthz", api, timeout_s=90, log_path=tmp_path / "api.log")
        yield base, worker
    finally:
        codes = procs.stop(api), procs.stop(worker)
    # Both shut down on SIGTERM, neither killed after the timeout nor crashed: uvicorn re-raises the signal
    # once its graceful shutdown is done, faust's worker exits 0.
    assert codes == (-signal.SIGTERM, 0)


def test_signed_product_is_indexed_and_recommended(settings, sessions, running, image_server, sample_images):
    base, worker = running
    with sessions.begin() as s:
        acme = create_tenant(s, "Acme", "acme", default_arm="visual")
        other = create_tenant(s, "Other shop", "other")
    by_id = {smp.id: smp for smp in sample_images[1]}
    events = [sample_event(by_id[i], "acme", image_server.base_url) for i in ("bus-front", "bus-mirror", "gift-blue")]

    catalog = CatalogClient(base, "acme", acme.webhook_secret)
    first = catalog.send(events[0])
    assert first.status_code == 202, first.text
    assert first.json() == {"accepted": [events[0]["event_id"]], "duplicates": []}
    assert catalog.send(events[1:]).status_code == 202

    def indexed():
        with sessions() as s:
            return s.scalars(select(Product).where(Product.indexed_at.is_not(None))).all()

    products = wait_for(lambda: len(indexed()) == 3 and indexed(), timeout_s=120, what="3 products indexed")
    assert {p.external_id for p in products} == {"bus-front", "bus-mirror", "gift-blue"}

    with sessions() as s:
        items = s.scalars(select(Item)).all()
        images = s.scalars(select(ProductImage)).all()
    assert {im.status for im in images} == {"ok"} and all(len(im.content_hash) == 64 for im in images)
    assert len(items) >= 3
    for item in items:
        assert item.model.startswith("efficientnet-lite0@") and item.dim == 1280
        vec = np.asarray(item.embedding.to_list() if hasattr(item.embedding, "to_list") else item.embedding)
        assert vec.shape == (1280,) and abs(np.linalg.norm(vec) - 1.0) < 1e-3

    shop = StorefrontClient(base, acme.storefront_key)
    body = shop.recommendations("bus-front", user_id="u1", limit=5).json()
    assert [it["product_id"] for it in body["items"]][0] == "bus-mirror"  # the mirrored bus, not the gift box
    assert "bus-front" not in [it["product_id"] for it in body["items"]]
    assert body["arm"] == "visual" and len(body["request_id"]) == 32

    # Another tenant's storefront key sees nothing of acme's catalog.
    assert StorefrontClient(base, other.storefront_key).recommendations("bus-front", user_id="u1").status_code == 404

    # Every indexed product was announced on catalog.product-indexed.
    consumer = KafkaConsumer(
        settings.topic(PRODUCT_INDEXED.name),
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
    )
    notices = [m.value for m in consumer]
    consumer.close()
    assert len(notices) == 3 and all(b'"status":"indexed"' in n for n in notices)
    assert worker.poll() is None  # still running


def test_exposures_and_clicks_land_once_and_two_api_processes_agree(
    settings, sessions, running, image_server, sample_images, tmp_path
):
    from db.experiments import create_experiment, start_experiment

    base, worker = running
    second_port = free_port()
    second = procs.spawn(
        ["api"], {**settings_env(settings), "VITRINE_API_PORT": str(second_port)}, tmp_path / "api2.log"
    )
    try:
        with sessions.begin() as s:
            acme = create_tenant(s, "Acme", "acme")
            create_experiment(
                s, "acme", "vis-1", arms=[{"name": "baseline", "weight": 0.5}, {"name": "visual", "weight": 0.5}]
            )
            start_experiment(s, "acme", "vis-1")
        by_id = {smp.id: smp for smp in sample_images[1]}
        catalog = CatalogClient(base, "acme", acme.webhook_secret)
        assert (
            catalog.send(
                [sample_event(by_id[i], "acme", image_server.base_url) for i in ("bus-front", "bus-mirror")]
            ).status_code
            == 202
        )
        wait_for(
            lambda: _count(sessions, "SELECT count(*) FROM products WHERE indexed_at IS NOT NULL") == 2,
            120,
            what="2 products indexed",
        )
        procs.wait_http(f"http://127.0.0.1:{second_port}/healthz", second, timeout_s=60)
        one, two = (StorefrontClient(b, acme.storefront_key) for b in (base, f"http://127.0.0.1:{second_port}"))
        users = [f"shopper-{i}" for i in range(20)]
        first = {u: one.recommendations("bus-front", user_id=u).json() for u in users}
        assert {u: two.recommendations("bus-front", user_id=u).json()["arm"] for u in users} == {
            u: r["arm"] for u, r in first.items()
        }

        click = {
            "event_id": "click-1",
            "type": "click",
            "user_id": "shopper-0",
            "product_id": "bus-mirror",
            "request_id": first["shopper-0"]["request_id"],
        }
        for _ in range(3):  # the storefront retries: one row, one popularity increment
            assert one.events(click).status_code == 202
        expected = len(users) * 2 + 1  # every response logged one exposure, on both processes
        wait_for(
            lambda: _count(sessions, "SELECT count(*) FROM interaction_events") == expected,
            60,
            what=f"{expected} interaction rows",
        )
        assert _count(sessions, "SELECT count(*) FROM interaction_events WHERE type = 'click'") == 1
        assert (
            _count(sessions, "SELECT count(DISTINCT request_id) FROM interaction_events WHERE type = 'exposure'")
            == len(users) * 2
        )
        exposure = _row(
            sessions,
            "SELECT experiment, arm, payload FROM interaction_events WHERE request_id = :r AND type = 'exposure'",
            r=first["shopper-0"]["request_id"],
        )
        assert exposure.experiment == "vis-1" and exposure.arm == first["shopper-0"]["arm"]
        assert exposure.payload["shown"] == [i["product_id"] for i in first["shopper-0"]["items"]]
        assert _row(
            sessions, "SELECT score FROM product_popularity WHERE product_id = 'bus-mirror'"
        ).score == pytest.approx(1.0, abs=1e-3)
        assert worker.poll() is None
    finally:
        procs.stop(second)


def _count(sessions, sql: str) -> int:
    from sqlalchemy import text

    with sessions() as s:
        return s.scalar(text(sql))


def _row(sessions, sql: str, **params):
    from sqlalchemy import text

    with sessions() as s:
        return s.execute(text(sql), params).one()


def test_many_concurrent_requests_do_not_exhaust_the_connection_pool(settings, sessions, running):
    """Regression: a request-scoped session held for the tenant lookup deadlocked the pool at ~15 requests."""
    import asyncio

    import httpx

    from core.contracts import CatalogEvent
    from db import catalog
    from db.catalog import ImageResult

    base, _ = running
    with sessions.begin() as s:
        acme = create_tenant(s, "Acme", "acme")
        for i in range(5):
            e = CatalogEvent.model_validate(
                {
                    "event_id": f"e{i}",
                    "tenant_id": "acme",
                    "type": "product.upserted",
                    "product": {
                        "id": f"p{i}",
                        "version": 1,
                        "category": "c",
                        "image_urls": [f"https://x.test/{i}.jpg"],
                    },
                }
            )
            catalog.upsert_product(
                s, e, [ImageResult(f"https://x.test/{i}.jpg", 0, "ok", content_hash=str(i))], model_key="m@1", dim=4
            )

    async def burst():
        async with httpx.AsyncClient(
            base_url=base,
            timeout=20,
            headers={"X-Vitrine-Key": acme.storefront_key},
            limits=httpx.Limits(max_connections=120),
        ) as client:
            return await asyncio.gather(
                *(
                    client.get("/v1/recommendations", params={"product_id": "p0", "user_id": f"u{i}"})
                    for i in range(120)
                )
            )

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 120
