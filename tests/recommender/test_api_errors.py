"""Every JSON endpoint on the real broker and Postgres: no input is answered 500, and an outage is a 503.

Deep JSON and NUL bytes (which Postgres cannot store) used to reach a 500 on several endpoints;
while Postgres was unreachable the API answered 500 instead of 503 with Retry-After.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.engine import make_url

from db.session import create_db_engine
from db.tenants import create_tenant
from recommender import signing
from recommender.app import create_app
from tests.helpers import wait_for
from tests.recommender.helpers import put_product, rec

pytestmark = pytest.mark.integration

DEEP = b"[" * 50_000 + b"]" * 50_000
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def api(settings, sessions):
    with sessions.begin() as s:
        creds = create_tenant(s, "Acme", "acme")
        put_product(s, "acme", "red", None)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client, creds


def catalog_post(client, body: bytes, secret: str, tenant: str = "acme"):
    return client.post(
        "/v1/catalog/events",
        content=body,
        headers={**JSON, "X-Vitrine-Tenant": tenant, signing.HEADER: signing.sign(secret, body)},
    )


def shopify_post(client, body: bytes, secret: str, tenant: str = "acme"):
    sig = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    return client.post(
        f"/v1/catalog/shopify/{tenant}",
        content=body,
        headers={
            **JSON,
            "X-Shopify-Topic": "products/update",
            "X-Shopify-Hmac-Sha256": sig,
            "X-Shopify-Webhook-Id": "w-1",
        },
    )


def product_event(**product) -> dict:
    return {
        "event_id": "e-1",
        "tenant_id": "acme",
        "type": "product.upserted",
        "product": {"id": "p1", "version": 1, "title": "Shirt", **product},
    }


def test_deep_json_and_nul_bytes_are_422_on_every_endpoint(api):
    client, creds = api
    admin = {"X-Vitrine-Admin-Key": creds.admin_key}
    arms = [{"name": "baseline", "weight": 0.5}, {"name": "visual", "weight": 0.5}]
    answers = {
        "catalog deep": catalog_post(client, DEEP, creds.webhook_secret),
        "catalog nul event_id": catalog_post(
            client, json.dumps({**product_event(), "event_id": "e\x00"}).encode(), creds.webhook_secret
        ),
        "catalog nul title": catalog_post(
            client, json.dumps(product_event(title="a\x00b")).encode(), creds.webhook_secret
        ),
        "catalog nul attribute": catalog_post(
            client, json.dumps(product_event(attributes={"k\x00": "v"})).encode(), creds.webhook_secret
        ),
        "shopify deep": shopify_post(client, DEEP, creds.webhook_secret),
        "shopify nul id": shopify_post(client, json.dumps({"id": "1\x00"}).encode(), creds.webhook_secret),
        "shopify nul tenant": client.post(
            "/v1/catalog/shopify/ac%00me",
            content=b"{}",
            headers={**JSON, "X-Shopify-Topic": "products/update", "X-Shopify-Webhook-Id": "w-1"},
        ),
        "admin deep": client.post("/v1/experiments", content=DEEP, headers={**admin, **JSON}),
        "admin nul placement": client.post(
            "/v1/experiments", headers=admin, json={"key": "x", "arms": arms, "placement": "a\x00"}
        ),
        "admin nul guardrail": client.post(
            "/v1/experiments", headers=admin, json={"key": "x", "arms": arms, "guardrails": ["c\x00"]}
        ),
        "admin nul key": client.post("/v1/experiments/a%00b/start", headers=admin),
        "results nul key": client.get("/v1/experiments/a%00b/results", headers=admin),
        "recommendations nul user": rec(client, creds.storefront_key, "red", user="u\x00"),
        "recommendations nul product": rec(client, creds.storefront_key, "r\x00"),
        "recommendations nul placement": rec(client, creds.storefront_key, "red", placement="p\x00"),
    }
    statuses = {name: r.status_code for name, r in answers.items()}
    assert statuses == dict.fromkeys(answers, 422), {n: r.text[:200] for n, r in answers.items()}
    # Nothing above hurt the next shopper or the next webhook.
    assert rec(client, creds.storefront_key, "red").status_code == 200
    assert catalog_post(client, json.dumps(product_event()).encode(), creds.webhook_secret).status_code == 202


def test_undocumented_methods_get_405_with_the_allowed_ones(api):
    client, creds = api
    admin = {"X-Vitrine-Admin-Key": creds.admin_key}
    # /results and /{action} used to share a path pattern: POST .../results was a 422, DELETE named POST only.
    results = client.post("/v1/experiments/x/results", headers=admin)
    assert results.status_code == 405 and results.headers["Allow"] == "GET"
    assert client.delete("/v1/experiments/x/results", headers=admin).headers["Allow"] == "GET"
    start = client.get("/v1/experiments/x/start", headers=admin)
    assert start.status_code == 405 and start.headers["Allow"] == "POST"


def _connections(postgres, database_url: str, allowed: bool) -> None:
    """Open or shut one database for new connections, ending the ones it has: Postgres itself refusing."""
    name = make_url(database_url).database
    engine = create_db_engine(postgres.admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}'))
            if not allowed:
                conn.execute(
                    text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name}
                )
    finally:
        engine.dispose()


def test_postgres_unreachable_is_a_503_with_retry_after_and_healthz_says_so(settings, sessions, postgres):
    with sessions.begin() as s:
        creds = create_tenant(s, "Acme", "acme")
        put_product(s, "acme", "red", None)
    local = settings.model_copy(update={"lookup_cache_ttl_s": 0.0})  # every request looks its key up
    with TestClient(create_app(local), raise_server_exceptions=False) as client:
        assert rec(client, creds.storefront_key, "red").status_code == 200
        health = client.get("/healthz")
        assert health.status_code == 200, health.text
        assert health.json()["database"]["ok"] and health.json()["broker"]["ok"]

        _connections(postgres, settings.database_url, allowed=False)
        try:
            body = json.dumps(product_event()).encode()
            answers = {
                "recommendations": rec(client, creds.storefront_key, "red"),
                "events": client.post(
                    "/v1/events",
                    headers={"X-Vitrine-Key": creds.storefront_key},
                    json={"event_id": "e", "type": "click", "user_id": "u", "product_id": "red"},
                ),
                "catalog": catalog_post(client, body, creds.webhook_secret),
                "experiments": client.get("/v1/experiments", headers={"X-Vitrine-Admin-Key": creds.admin_key}),
            }
            assert {n: r.status_code for n, r in answers.items()} == dict.fromkeys(answers, 503), {
                n: r.text[:200] for n, r in answers.items()
            }
            assert {r.headers.get("Retry-After") for r in answers.values()} == {"5"}
            assert "database unavailable" in answers["recommendations"].json()["detail"]
            # No key, no database needed: still the precise 401.
            assert client.get("/v1/recommendations", params={"product_id": "red", "user_id": "u"}).status_code == 401
            down = client.get("/healthz")
            assert down.status_code == 503
            assert not down.json()["database"]["ok"] and down.json()["database"]["error"]
            assert down.json()["broker"]["ok"]
        finally:
            _connections(postgres, settings.database_url, allowed=True)
        # The pool's pre-ping replaces the dead connections: back without a restart.
        wait_for(
            lambda: rec(client, creds.storefront_key, "red").status_code == 200,
            30,
            what="recommendations to be served again",
        )
        assert client.get("/healthz").json()["database"]["ok"]
