"""CORS on the real API and Postgres: per-tenant origins, preflights, and what a disallowed origin gets."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from db.cors_origins import cors_origins, normalize_origin, set_cors_origins, tenants_by_origin
from db.tenants import create_tenant
from recommender.app import create_app

pytestmark = pytest.mark.integration

ACME, GLOBEX, EVIL = "https://shop.acme.test", "https://globex.test:8443", "https://evil.test"


@pytest.fixture
def api(settings, sessions):
    """Two tenants with an origin each, and an API that reads the origins on every request (no cache)."""
    with sessions.begin() as s:
        a = create_tenant(s, "Acme", "acme")
        b = create_tenant(s, "Globex", "globex")
        set_cors_origins(s, "acme", [ACME + "/"])
        set_cors_origins(s, "globex", [GLOBEX.upper()])
    with TestClient(create_app(settings.model_copy(update={"lookup_cache_ttl_s": 0.0}))) as client:
        yield client, a, b


def preflight(client, origin, path="/v1/recommendations", method="GET", headers="x-vitrine-key"):
    return client.options(
        path,
        headers={"Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers},
    )


def get(client, key, origin=None):
    """A storefront request with the key and (unless None) an Origin header."""
    headers = {"X-Vitrine-Key": key} | ({"Origin": origin} if origin else {})
    return client.get("/v1/recommendations", params={"product_id": "p", "user_id": "u"}, headers=headers)


def cors_headers(response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.lower().startswith("access-control-")}


def test_preflight_for_an_allowed_origin_is_answered_with_its_headers(api):
    client, _, _ = api
    for path, method in (("/v1/recommendations", "GET"), ("/v1/events", "POST")):
        r = preflight(client, ACME, path, method, "x-vitrine-key,content-type")
        assert r.status_code == 200, r.text  # was 405 before CORS
        assert r.headers["access-control-allow-origin"] == ACME
        assert method in r.headers["access-control-allow-methods"]
        assert "x-vitrine-key" in r.headers["access-control-allow-headers"].lower()
        assert r.headers["access-control-max-age"] == "600"
    assert preflight(client, GLOBEX).headers["access-control-allow-origin"] == GLOBEX  # stored normalised


def test_a_disallowed_origin_gets_no_cors_headers(api):
    client, a, _ = api
    r = preflight(client, EVIL)
    assert r.status_code == 400 and cors_headers(r) == {}
    assert cors_headers(get(client, a.storefront_key, EVIL)) == {}
    # The admin key may not be sent cross-origin, even from an allowed origin.
    assert preflight(client, ACME, "/v1/experiments", headers="x-vitrine-admin-key").status_code == 400


def test_a_real_request_is_readable_only_from_its_own_tenants_origins(api):
    client, a, b = api
    own = get(client, a.storefront_key, ACME)
    assert own.headers["access-control-allow-origin"] == ACME
    assert own.headers["access-control-expose-headers"] == "Retry-After"
    other = get(client, b.storefront_key, ACME)
    assert "access-control-allow-origin" not in other.headers and "Origin" in other.headers["vary"]
    unknown_key = get(client, "nope", ACME)
    assert unknown_key.status_code == 401 and unknown_key.headers["access-control-allow-origin"] == ACME
    no_origin = get(client, a.storefront_key)
    assert cors_headers(no_origin) == {}


def test_a_changed_origin_list_applies_without_a_restart(api, sessions):
    client, _, _ = api
    with sessions.begin() as s:
        set_cors_origins(s, "acme", [EVIL])
    assert preflight(client, EVIL).status_code == 200
    assert preflight(client, ACME).status_code == 400


def test_origins_are_validated_and_normalised(sessions):
    assert normalize_origin("HTTPS://Shop.Example.com:443/") == "https://shop.example.com:443"
    assert normalize_origin("http://[::1]:8080") == "http://[::1]:8080"
    for bad in (
        "shop.example.com",
        "ftp://x.test",
        "https://x.test/path",
        "https://u:p@x.test",
        "https://x.test:99999",
    ):
        with pytest.raises(ValueError, match="bad origin"):
            normalize_origin(bad)
    with sessions.begin() as s:
        create_tenant(s, "Solo", "solo")
        assert set_cors_origins(s, "solo", ["https://b.test", "https://a.test", "https://b.test/"]) == [
            "https://a.test",
            "https://b.test",
        ]
        assert cors_origins(s, "solo") == ["https://a.test", "https://b.test"]
        assert tenants_by_origin(s)["https://a.test"] == frozenset({"solo"})
        with pytest.raises(KeyError):
            set_cors_origins(s, "nobody", [])
