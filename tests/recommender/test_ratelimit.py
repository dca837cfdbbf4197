"""Rate limits per key on the real API and Postgres: 429 + Retry-After, one key never limits another."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from db.cors_origins import set_cors_origins
from db.tenants import create_tenant
from recommender.app import create_app
from recommender.ratelimit import RATE_LIMITED
from tests.recommender.helpers import rec

pytestmark = pytest.mark.integration


@pytest.fixture
def api(settings, sessions):
    with sessions.begin() as s:
        a = create_tenant(s, "Acme", "acme")
        b = create_tenant(s, "Globex", "globex")
        set_cors_origins(s, "acme", ["https://shop.acme.test"])
    limited = settings.model_copy(update={"rate_limit_storefront": "3/minute", "rate_limit_admin": "2/minute"})
    with TestClient(create_app(limited)) as client:
        yield client, a, b


def test_a_key_over_its_limit_gets_429_with_retry_after(api):
    client, a, b = api
    before = RATE_LIMITED.labels("storefront")._value.get()
    assert all(rec(client, a.storefront_key, "p").status_code != 429 for _ in range(3))
    over = client.get(
        "/v1/recommendations",
        params={"product_id": "p", "user_id": "u"},
        headers={"X-Vitrine-Key": a.storefront_key, "Origin": "https://shop.acme.test"},
    )
    assert over.status_code == 429 and "storefront key" in over.json()["detail"]
    assert 1 <= int(over.headers["retry-after"]) <= 60
    assert over.headers["access-control-allow-origin"] == "https://shop.acme.test"  # the browser can read it
    assert RATE_LIMITED.labels("storefront")._value.get() == before + 1
    assert rec(client, b.storefront_key, "p").status_code != 429  # another tenant's key is not affected


def test_admin_keys_have_their_own_limit(api):
    client, a, _ = api
    codes = [client.get("/v1/experiments", headers={"X-Vitrine-Admin-Key": a.admin_key}).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    assert rec(client, a.storefront_key, "p").status_code != 429  # the storefront key counts separately
    # No key: not counted here, answered 401 by authentication.
    assert {client.get("/v1/experiments").status_code for _ in range(4)} == {401}


def test_an_empty_limit_turns_it_off(settings, sessions):
    with sessions.begin() as s:
        a = create_tenant(s, "Acme", "acme")
    with TestClient(create_app(settings.model_copy(update={"rate_limit_storefront": ""}))) as client:
        assert all(rec(client, a.storefront_key, "p").status_code != 429 for _ in range(5))
