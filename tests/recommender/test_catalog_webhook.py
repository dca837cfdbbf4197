"""POST /v1/catalog/events against the real broker and Postgres: bad input never reaches Kafka."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from kafka import KafkaConsumer

from db.tenants import create_tenant
from recommender import signing
from recommender.app import create_app
from streams.topics import PRODUCT_EVENTS

pytestmark = pytest.mark.integration


def event(product_id="p1", tenant="acme", **product):
    return {"event_id": f"e-{product_id}", "tenant_id": tenant, "type": "product.upserted",
            "product": {"id": product_id, "version": 1, "title": "Shirt",
                        "image_urls": ["https://img.example.com/p1.jpg"], **product}}


@pytest.fixture
def api(settings, sessions):
    with sessions.begin() as s:
        creds = create_tenant(s, "Acme", "acme")
    with TestClient(create_app(settings)) as client:
        yield client, creds


def post(client, body: bytes, secret: str | None, tenant="acme", ts=None):
    headers = {"X-Vitrine-Tenant": tenant, "Content-Type": "application/json"}
    if secret is not None:
        headers[signing.HEADER] = signing.sign(secret, body, ts)
    return client.post("/v1/catalog/events", content=body, headers=headers)


def produced(settings) -> list[dict]:
    consumer = KafkaConsumer(settings.topic(PRODUCT_EVENTS.name), bootstrap_servers=settings.kafka_bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=3000)
    out = [json.loads(m.value) | {"_key": m.key.decode()} for m in consumer]
    consumer.close()
    return out


def test_bad_requests_get_precise_errors_and_nothing_reaches_kafka(api, settings):
    client, creds = api
    good = json.dumps(event()).encode()
    cases = [
        (post(client, good, None), 401, "missing X-Vitrine-Signature"),
        (post(client, good, "whsec_wrong"), 401, "does not match"),
        (post(client, good, creds.webhook_secret, ts=1_600_000_000), 401, "tolerance"),
        (post(client, good, creds.webhook_secret, tenant="nobody"), 404, "unknown tenant"),
        (post(client, b"{not json", creds.webhook_secret), 422, "malformed JSON"),
        (post(client, b"[]", creds.webhook_secret), 422, "no events"),
        (post(client, json.dumps(event(tenant="other")).encode(), creds.webhook_secret), 422, "tenant_id"),
    ]
    for resp, status, text in cases:
        assert resp.status_code == status, resp.text
        assert text in resp.text

    bad_price = post(client, json.dumps(event(price="-3")).encode(), creds.webhook_secret)
    assert bad_price.status_code == 422
    assert bad_price.json()["detail"][0]["loc"] == [0, "product", "price"]
    # A batch with one bad event is refused whole, and names the bad one.
    batch = json.dumps({"events": [event("p1"), event("p2", version=-1)]}).encode()
    resp = post(client, batch, creds.webhook_secret)
    assert resp.status_code == 422 and resp.json()["detail"][0]["loc"] == [1, "product", "version"]

    assert produced(settings) == []


def test_accepted_events_are_on_the_topic_keyed_by_product(api, settings):
    client, creds = api
    body = json.dumps({"events": [event("p1"), event("p2")]}).encode()
    resp = post(client, body, creds.webhook_secret)
    assert resp.status_code == 202 and resp.json() == {"accepted": ["e-p1", "e-p2"]}
    msgs = produced(settings)
    assert sorted(m["_key"] for m in msgs) == ["acme:p1", "acme:p2"]
    assert {m["product"]["title"] for m in msgs} == {"Shirt"}
