"""POST /v1/catalog/events against the real broker and Postgres: bad input never reaches Kafka."""

from __future__ import annotations

import json
import time
from datetime import UTC

import pytest
from fastapi.testclient import TestClient
from kafka import KafkaConsumer
from prometheus_client.parser import text_string_to_metric_families

from db.tenants import create_tenant
from recommender import signing
from recommender.app import create_app
from streams.topics import PRODUCT_EVENTS
from tests.helpers import wait_for

pytestmark = pytest.mark.integration


def event(product_id="p1", tenant="acme", **product):
    return {
        "event_id": f"e-{product_id}",
        "tenant_id": tenant,
        "type": "product.upserted",
        "product": {
            "id": product_id,
            "version": 1,
            "title": "Shirt",
            "image_urls": ["https://img.example.com/p1.jpg"],
            **product,
        },
    }


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
    consumer = KafkaConsumer(
        settings.topic(PRODUCT_EVENTS.name),
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
    )
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
    assert resp.status_code == 202 and resp.json() == {"accepted": ["e-p1", "e-p2"], "duplicates": []}
    msgs = produced(settings)
    assert sorted(m["_key"] for m in msgs) == ["acme:p1", "acme:p2"]
    assert {m["product"]["title"] for m in msgs} == {"Shirt"}


def test_the_same_event_twice_is_accepted_once(api, settings):
    client, creds = api
    body = json.dumps(event("p1")).encode()
    assert post(client, body, creds.webhook_secret).json() == {"accepted": ["e-p1"], "duplicates": []}
    # A retry (new signature, same event id) and a batch repeating it are acknowledged, not re-sent.
    assert post(client, body, creds.webhook_secret).json() == {"accepted": [], "duplicates": ["e-p1"]}
    batch = json.dumps([event("p1"), event("p2"), event("p2")]).encode()
    assert post(client, batch, creds.webhook_secret).json() == {"accepted": ["e-p2"], "duplicates": ["e-p1"]}
    assert sorted(m["event_id"] for m in produced(settings)) == ["e-p1", "e-p2"]


def test_oversized_bodies_are_refused_before_parsing(api):
    client, creds = api
    huge = b"[" + b" " * (5 * 1024 * 1024) + b"]"
    assert post(client, huge, creds.webhook_secret).status_code == 413
    many = json.dumps([event(f"p{i}") for i in range(501)]).encode()
    resp = post(client, many, creds.webhook_secret)
    assert resp.status_code == 413 and "limit is 500" in resp.text


def test_rotated_secret_keeps_working_during_the_grace_period(api, sessions):
    from datetime import datetime, timedelta

    from db.models import Tenant

    client, creds = api
    with sessions.begin() as s:
        t = s.get(Tenant, "acme")
        t.webhook_secret_previous, t.webhook_secret = t.webhook_secret, "whsec_new"
        t.webhook_secret_previous_expires_at = datetime.now(UTC) + timedelta(hours=1)
    assert post(client, json.dumps(event("p1")).encode(), creds.webhook_secret).status_code == 202
    assert post(client, json.dumps(event("p2")).encode(), "whsec_new").status_code == 202
    with sessions.begin() as s:
        s.get(Tenant, "acme").webhook_secret_previous_expires_at = datetime.now(UTC) - timedelta(seconds=1)
    assert post(client, json.dumps(event("p3")).encode(), creds.webhook_secret).status_code == 401


def test_broker_down_answers_503_with_retry_after_and_the_retry_is_accepted(settings, sessions, tmp_path):
    from streams.embedded_broker import EmbeddedBroker
    from streams.topics import ensure_topics

    with sessions.begin() as s:
        creds = create_tenant(s, "Acme", "acme")
    own = EmbeddedBroker(log_path=tmp_path / "broker.log").start()  # a broker of our own, to stop
    port = own.port
    local = settings.model_copy(update={"kafka_bootstrap": own.bootstrap, "kafka_ack_timeout_s": 2.0})
    ensure_topics(local)
    body = json.dumps(event("p1")).encode()
    restarted = None
    try:
        with TestClient(create_app(local)) as client:
            own.stop()
            resp = post(client, body, creds.webhook_secret)
            assert resp.status_code == 503 and resp.headers["Retry-After"] == "5"
            assert "nothing was accepted" in resp.text
            # The outage is known now (circuit open): webhooks and storefront events are refused at once,
            # not after the ack timeout (10 s by default, past Shopify's 5 s delivery timeout).
            click = {"event_id": "c1", "type": "click", "user_id": "u1", "product_id": "p1"}
            for _ in range(3):
                start = time.monotonic()
                again = post(client, body, creds.webhook_secret)
                clicked = client.post("/v1/events", json=click, headers={"X-Vitrine-Key": creds.storefront_key})
                assert time.monotonic() - start < 1.0
                assert again.status_code == clicked.status_code == 503, clicked.text
                assert again.headers["Retry-After"] == clicked.headers["Retry-After"] == "5"
            restarted = EmbeddedBroker(port, log_path=tmp_path / "broker2.log").start()
            ensure_topics(local)
            # A client honouring Retry-After tries again; once the producer has reconnected the event
            # is accepted (its claim was released, so it is not mistaken for a duplicate).
            retry = wait_for(
                lambda: (r := post(client, body, creds.webhook_secret)).status_code == 202 and r,
                60,
                interval_s=1.0,
                what="the webhook to accept again",
            )
            assert retry.json()["accepted"] == ["e-p1"]
    finally:  # after the app's shutdown, which still talks to the broker
        if restarted is not None:
            restarted.stop()


def test_api_exposes_prometheus_metrics(api):
    client, creds = api

    def samples() -> list:
        return [s for f in text_string_to_metric_families(client.get("/metrics").text) for s in f.samples]

    def malformed_count() -> float:
        return next(
            (
                s.value
                for s in samples()
                if s.name == "vitrine_api_rejected_requests_total" and s.labels == {"reason": "malformed_json"}
            ),
            0.0,
        )

    before = malformed_count()
    post(client, b"{", creds.webhook_secret)
    assert malformed_count() == before + 1
    assert "vitrine_api_request_seconds_bucket" in {s.name for s in samples()}
