"""Receipts follow the broker: an event id is a duplicate only once Kafka acknowledged it.

The issue's reproduction: an API killed between claiming an event id and Kafka's acknowledgement
left the id claimed, so the retailer's retry was answered `duplicates` and the event never indexed.
"""

from __future__ import annotations

import json
import os
import signal
import threading

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from db import receipts
from db.tenants import create_tenant
from recommender import signing
from recommender.app import create_app
from streams.embedded_broker import EmbeddedBroker, free_port
from streams.topics import ensure_topics
from tests.helpers import settings_env, wait_for
from vitrine import procs
from vitrine.client import CatalogClient
from vitrine.sample_catalog import sample_event

pytestmark = pytest.mark.integration


def event(product_id: str) -> dict:
    return {
        "event_id": f"e-{product_id}",
        "tenant_id": "acme",
        "type": "product.upserted",
        "product": {"id": product_id, "version": 1, "title": "Shirt", "image_urls": ["https://img.example.com/p1.jpg"]},
    }


def post(client, events, secret: str):
    body = json.dumps(events).encode()
    return client.post(
        "/v1/catalog/events",
        content=body,
        headers={
            "X-Vitrine-Tenant": "acme",
            "Content-Type": "application/json",
            signing.HEADER: signing.sign(secret, body),
        },
    )


def receipt(sessions, event_id: str):
    with sessions() as s:
        return s.execute(
            text("SELECT claimed_at, acked_at FROM event_receipts WHERE event_id = :e"), {"e": event_id}
        ).one_or_none()


def test_an_id_claimed_by_another_request_is_in_flight_not_a_duplicate(settings, sessions):
    with sessions.begin() as s:
        creds = create_tenant(s, "Acme", "acme")
        receipts.claim(s, "acme", ["e-p1"], settings.receipt_lease_s)  # a request that has not seen the ack yet
    with TestClient(create_app(settings)) as client:
        resp = post(client, [event("p1"), event("p2")], creds.webhook_secret)
        # p2 is new: produced and acknowledged. p1 is neither accepted nor a duplicate: retry it later.
        assert resp.status_code == 503, resp.text
        body = resp.json()
        assert body["accepted"] == ["e-p2"] and body["in_flight"] == ["e-p1"] and body["duplicates"] == []
        assert 25 <= int(resp.headers["Retry-After"]) <= settings.receipt_lease_s
        assert receipt(sessions, "e-p2").acked_at is not None and receipt(sessions, "e-p1").acked_at is None

        with sessions.begin() as s:  # the other request died: its lease runs out
            s.execute(text("UPDATE event_receipts SET claimed_at = now() - interval '1 hour' WHERE event_id = 'e-p1'"))
        retry = post(client, [event("p1"), event("p2")], creds.webhook_secret)
        assert retry.status_code == 202 and retry.json() == {"accepted": ["e-p1"], "duplicates": ["e-p2"]}
        assert receipt(sessions, "e-p1").acked_at is not None


def test_a_failed_produce_is_not_a_receipt(settings, sessions, tmp_path):
    with sessions.begin() as s:
        creds = create_tenant(s, "Acme", "acme")
    own = EmbeddedBroker(log_path=tmp_path / "broker.log").start()
    local = settings.model_copy(update={"kafka_bootstrap": own.bootstrap, "kafka_ack_timeout_s": 2.0})
    ensure_topics(local)
    try:
        with TestClient(create_app(local)) as client:
            own.stop()
            assert post(client, [event("p1")], creds.webhook_secret).status_code == 503
    finally:
        own.stop()
    assert receipt(sessions, "e-p1") is None  # released: the retry will be accepted at once


def test_api_killed_between_claim_and_ack_the_retry_is_accepted_and_indexed_once(
    settings, sessions, tmp_path, image_server, sample_images
):
    with sessions.begin() as s:
        acme = create_tenant(s, "Acme", "acme")
    own = EmbeddedBroker(log_path=tmp_path / "broker.log").start()  # a broker of our own, to pause
    local = settings.model_copy(update={"kafka_bootstrap": own.bootstrap})
    ensure_topics(local)
    env = {**settings_env(local), "VITRINE_RECEIPT_LEASE_S": "6", "VITRINE_KAFKA_ACK_TIMEOUT_S": "5"}
    the_event = sample_event({smp.id: smp for smp in sample_images[1]}["bus-front"], "acme", image_server.base_url)
    event_id = the_event["event_id"]
    started = []
    try:
        first_port = free_port()
        first = procs.spawn(["api"], {**env, "VITRINE_API_PORT": str(first_port)}, tmp_path / "api1.log")
        started.append(first)
        procs.wait_http(f"http://127.0.0.1:{first_port}/healthz", first, timeout_s=90, log_path=tmp_path / "api1.log")

        os.kill(own.proc.pid, signal.SIGSTOP)  # the produce hangs: no acknowledgement can come
        try:
            sender = threading.Thread(
                target=_send_ignoring_drop,
                daemon=True,
                args=(f"http://127.0.0.1:{first_port}", acme.webhook_secret, the_event),
            )
            sender.start()
            wait_for(lambda: receipt(sessions, event_id) is not None, 30, interval_s=0.05, what="the claim")
            first.send_signal(signal.SIGKILL)
            first.wait()
        finally:
            os.kill(own.proc.pid, signal.SIGCONT)
        sender.join(10)
        assert receipt(sessions, event_id).acked_at is None  # claimed, never acknowledged

        # The retailer retries against a fresh API process; the worker runs.
        second_port = free_port()
        second = procs.spawn(["api"], {**env, "VITRINE_API_PORT": str(second_port)}, tmp_path / "api2.log")
        started.append(second)
        started.append(procs.spawn(["worker"], env, tmp_path / "worker.log"))
        base = f"http://127.0.0.1:{second_port}"
        procs.wait_http(f"{base}/healthz", second, timeout_s=90, log_path=tmp_path / "api2.log")
        client = CatalogClient(base, "acme", acme.webhook_secret)
        answers = []

        def retry():
            r = client.send(the_event)
            answers.append((r.status_code, r.json()))
            return r.status_code == 202 and r

        accepted = wait_for(retry, 30, interval_s=1.0, what="the retry to be answered 202")
        # Until the lease ran out the claim was in flight (503 + Retry-After), never a duplicate.
        assert all(code == 503 and body["in_flight"] == [event_id] for code, body in answers[:-1]), answers
        assert accepted.json() == {"accepted": [event_id], "duplicates": []}

        wait_for(
            lambda: _count(sessions, "SELECT count(*) FROM products WHERE indexed_at IS NOT NULL") == 1,
            120,
            what="the product indexed",
        )
        # Indexed once: one product, one image, its items once, whether or not the broker wrote the first
        # produce when it resumed (the worker skips a version it already has).
        assert _count(sessions, "SELECT count(*) FROM products") == 1
        assert _count(sessions, "SELECT count(*) FROM product_images") == len(the_event["product"]["image_urls"])
        assert _count(sessions, "SELECT count(*) FROM items") == _count(
            sessions, "SELECT count(DISTINCT (image_id, box)) FROM items"
        )
        assert client.send(the_event).json() == {"accepted": [], "duplicates": [event_id]}
        client.close()
    finally:
        for proc in reversed(started):
            procs.stop(proc)
        own.stop()


def _send_ignoring_drop(base: str, secret: str, the_event: dict) -> None:
    client = CatalogClient(base, "acme", secret, timeout_s=60)
    try:
        client.send(the_event)
    except httpx.HTTPError:  # the API is killed while this request waits for Kafka
        pass
    finally:
        client.close()


def _count(sessions, sql: str) -> int:
    with sessions() as s:
        return s.scalar(text(sql))
