"""Credentials in image URLs, on the real API, broker and Postgres: refused by the webhook, never published."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from core.contracts import CatalogEvent
from db import catalog
from db.catalog import ImageResult, ItemRow
from db.tenants import create_tenant
from db.vector_index import ensure_vector_index
from recommender import signing
from recommender.app import create_app
from tests.recommender.helpers import put_product, rec

pytestmark = pytest.mark.integration

SECRET_URL = "http://shop:s3cret@img.example.com/p1.jpg"


@pytest.fixture
def api(settings, sessions):
    with sessions.begin() as s:
        creds = create_tenant(s, "Acme", "acme", default_arm="visual")
        ensure_vector_index(s.connection(), "m@1", 4)
        put_product(s, "acme", "red", [1, 0, 0, 0])
        # A row written before the edge refused credentials (the event's URL list is bypassed here).
        event = CatalogEvent.model_validate(
            {
                "event_id": "old",
                "tenant_id": "acme",
                "type": "product.upserted",
                "product": {"id": "old", "version": 1, "category": "shirts"},
            }
        )
        item = ItemRow("whole", (0, 0, 1, 1), "product", 1.0, np.asarray([0.9, 0.1, 0, 0], np.float32))
        catalog.upsert_product(
            s, event, [ImageResult(SECRET_URL, 0, "ok", content_hash="h", items=[item])], model_key="m@1", dim=4
        )
    app = create_app(settings)
    app.state.arms["visual"].model_key = "m@1"
    app.state.arms["visual"].dim = 4
    with TestClient(app) as client:
        yield client, creds


def test_the_webhook_answers_422_at_the_url_and_does_not_echo_it(api):
    client, creds = api
    doc = {
        "event_id": "e1",
        "tenant_id": "acme",
        "type": "product.upserted",
        "product": {"id": "p1", "version": 1, "image_urls": ["https://img.example.com/ok.jpg", SECRET_URL]},
    }
    body = json.dumps({"events": [doc]}).encode()
    resp = client.post(
        "/v1/catalog/events",
        content=body,
        headers={
            "X-Vitrine-Tenant": "acme",
            "Content-Type": "application/json",
            signing.HEADER: signing.sign(creds.webhook_secret, body),
        },
    )
    assert resp.status_code == 422, resp.text
    [error] = resp.json()["detail"]
    assert error["loc"] == [0, "product", "image_urls", 1] and error["type"] == "url_userinfo"
    assert "s3cret" not in resp.text


def test_a_stored_url_with_credentials_is_never_published(api):
    client, creds = api
    items = {i["product_id"]: i for i in rec(client, creds.storefront_key, "red").json()["items"]}
    assert items["old"]["image_url"] is None  # recommended, but without its image
    by_old = {i["product_id"]: i for i in rec(client, creds.storefront_key, "old").json()["items"]}
    assert by_old["red"]["image_url"] == "https://x.test/red.jpg"
    assert "s3cret" not in json.dumps(rec(client, creds.storefront_key, "red").json())
