"""The admin API's credential routes on the real stack: Shopify's secret, rotation with grace, revocation, audit."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from db.tenants import create_tenant
from recommender.app import create_app
from tests.recommender.helpers import rec, shopify_post

pytestmark = pytest.mark.integration

UPDATE = {"id": 9554194432293, "title": "T-Shirt", "status": "active", "variants": [{"price": "29.99"}]}
SHOPIFY_SECRET = "b5e3f1a2c4d6e8f0a1b3c5d7e9f1a2b4"  # the shape of a secret Shopify shows


@pytest.fixture
def tenants(sessions):
    with sessions.begin() as s:
        return create_tenant(s, "Acme", "acme"), create_tenant(s, "Globex", "globex")


def known(client, key) -> bool:
    """Whether the storefront accepts `key` (404: authenticated, the product is unknown; 401: not)."""
    status = rec(client, key, "p1").status_code
    assert status in (401, 404)
    return status == 404


def admin(client, creds, method, path, **kw):
    return client.request(method, f"/v1/tenant{path}", headers={"X-Vitrine-Admin-Key": creds.admin_key}, **kw)


def test_shopify_can_be_connected_with_the_secret_shopify_chose(settings, tenants):
    acme, _ = tenants
    with TestClient(create_app(settings)) as client:
        # Before: Shopify signs with its own secret and vitrine knows only the one it generated.
        assert shopify_post(client, "acme", UPDATE, SHOPIFY_SECRET, webhook_id="w-0").status_code == 401
        r = admin(client, acme, "PUT", "/webhook-secret", json={"secret": SHOPIFY_SECRET, "grace_s": 3600})
        assert r.status_code == 200, r.text
        assert r.headers["cache-control"] == "no-store" and r.json()["secret"] is None
        assert SHOPIFY_SECRET not in r.text
        assert shopify_post(client, "acme", UPDATE, SHOPIFY_SECRET, webhook_id="w-1").status_code == 202
        # The old secret works during the grace period, until it is revoked.
        assert shopify_post(client, "acme", UPDATE, acme.webhook_secret, webhook_id="w-2").status_code == 202
        end = admin(client, acme, "POST", "/credentials/webhook_secret/revoke", json={"previous_only": True})
        assert end.status_code == 200 and end.json()["secret"] is None
        assert shopify_post(client, "acme", UPDATE, acme.webhook_secret, webhook_id="w-3").status_code == 401
        assert shopify_post(client, "acme", UPDATE, SHOPIFY_SECRET, webhook_id="w-4").status_code == 202


def test_a_rotated_storefront_key_works_in_grace_and_a_revoked_one_stops_at_once(settings, tenants):
    acme, globex = tenants
    with TestClient(create_app(settings)) as client:
        assert known(client, acme.storefront_key)  # now cached by this process
        r = admin(client, acme, "POST", "/credentials/storefront_key/rotate", json={"grace_s": 600})
        assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
        new = r.json()["secret"]
        assert new.startswith("vsk_acme_") and r.json()["previous_valid_until"] is not None
        assert known(client, new) and known(client, acme.storefront_key)
        r = admin(client, acme, "POST", "/credentials/storefront_key/revoke", json={})
        newest = r.json()["secret"]
        for old in (acme.storefront_key, new):  # both stop now, cache or not
            assert not known(client, old)
        assert known(client, newest)
        assert known(client, globex.storefront_key)  # another tenant is untouched
        # The audit is the caller's tenant's only, and names the admin key by fingerprint.
        trail = admin(client, acme, "GET", "/credentials/audit").json()
        assert [(a["credential"], a["action"]) for a in trail[:2]] == [
            ("storefront_key", "revoke"),
            ("storefront_key", "rotate"),
        ]
        assert trail[0]["actor"].startswith("api:admin-key:") and len(trail) == 5
        assert len(admin(client, globex, "GET", "/credentials/audit").json()) == 3
        for secret in (new, newest, acme.admin_key):
            assert secret not in str(trail)


def test_a_rotated_admin_key_hands_over_and_bad_input_is_a_precise_422(settings, tenants):
    acme, _ = tenants
    with TestClient(create_app(settings)) as client:
        short = admin(client, acme, "PUT", "/webhook-secret", json={"secret": "tooshort-secret"})
        assert short.status_code == 422 and short.json()["detail"][0]["loc"] == ["body", "secret"]
        assert "tooshort-secret" not in short.text  # a near-miss secret is still a secret
        long_grace = admin(client, acme, "POST", "/credentials/admin_key/rotate", json={"grace_s": 31 * 86400})
        assert long_grace.status_code == 422 and long_grace.json()["detail"][0]["loc"] == ["body", "grace_s"]
        unknown = admin(client, acme, "POST", "/credentials/password/rotate", json={})
        assert unknown.status_code == 422 and unknown.json()["detail"][0]["loc"] == ["path", "credential"]
        same = admin(client, acme, "PUT", "/webhook-secret", json={"secret": acme.webhook_secret})
        assert same.status_code == 409 and "already in force" in same.text
        r = admin(client, acme, "POST", "/credentials/admin_key/rotate", json={"grace_s": 0})
        new_admin = r.json()["secret"]
        assert admin(client, acme, "GET", "/credentials/audit").status_code == 401  # grace 0: old key stops
        audit = client.get("/v1/tenant/credentials/audit", headers={"X-Vitrine-Admin-Key": new_admin})
        assert audit.status_code == 200 and audit.json()[0]["action"] == "rotate"
        assert client.get("/v1/tenant/credentials/audit").status_code == 401
