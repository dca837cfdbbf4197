"""The walking skeleton on real parts: HTTP -> Kafka -> faust worker -> model -> Postgres -> HTTP."""

from __future__ import annotations

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
        assert procs.stop(api) is not None
        assert procs.stop(worker) is not None


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
    consumer = KafkaConsumer(settings.topic(PRODUCT_INDEXED.name), bootstrap_servers=settings.kafka_bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=5000)
    notices = [m.value for m in consumer]
    consumer.close()
    assert len(notices) == 3 and all(b'"status":"indexed"' in n for n in notices)
    assert worker.poll() is None  # still running
