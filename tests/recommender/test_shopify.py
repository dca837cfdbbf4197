"""Shopify product webhooks, with payloads shaped like Shopify's documented examples."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest
from fastapi.testclient import TestClient

from db.tenants import create_tenant
from recommender import shopify
from recommender.app import create_app

# products/update example from shopify.dev "Webhooks delivery structure", plus images as the
# REST Product resource documents them (position, src).
UPDATE = {
    "id": 9554194432293,
    "title": "T-Shirt",
    "status": "active",
    "vendor": "My Store",
    "product_type": "Shirts",
    "updated_at": "2025-04-22T14:30:00-05:00",
    "variants": [
        {
            "id": 123456789,
            "title": "Default Title",
            "price": "29.99",
            "sku": "TSHIRT-001",
            "taxable": True,
            "updated_at": "2025-04-22T14:30:00-05:00",
            "inventory_management": "shopify",
            "inventory_policy": "deny",
            "inventory_quantity": 3,
        }
    ],
    "images": [
        {"id": 2, "position": 2, "src": "https://cdn.shopify.com/s/files/back.jpg"},
        {"id": 1, "position": 1, "src": "https://cdn.shopify.com/s/files/front.jpg"},
    ],
    "tags": "cotton, comfortable",
}
DELETE = {"id": 9554194432293}  # products/delete carries only the id


def test_update_maps_to_an_upsert_with_ordered_images_and_a_time_version():
    e = shopify.to_event("products/update", UPDATE, tenant_id="acme", webhook_id="w-1", triggered_at=None)
    assert e.type == "product.upserted" and e.event_id == "shopify:w-1" and e.key == "acme:9554194432293"
    assert e.product.version == 1745350200000  # 2025-04-22T19:30:00Z in ms
    assert [str(u) for u in e.product.image_urls] == [
        "https://cdn.shopify.com/s/files/front.jpg",
        "https://cdn.shopify.com/s/files/back.jpg",
    ]
    assert (e.product.title, e.product.category, str(e.product.price), e.product.in_stock) == (
        "T-Shirt",
        "Shirts",
        "29.99",
        True,
    )
    assert e.product.attributes["vendor"] == "My Store"


def test_sold_out_and_draft_products_are_not_in_stock():
    sold_out = {**UPDATE, "variants": [{**UPDATE["variants"][0], "inventory_quantity": 0}]}
    draft = {**UPDATE, "status": "draft"}
    for doc in (sold_out, draft):
        assert not shopify.to_event(
            "products/update", doc, tenant_id="a", webhook_id="w", triggered_at=None
        ).product.in_stock


def test_delete_uses_the_trigger_time_as_version():
    e = shopify.to_event(
        "products/delete", DELETE, tenant_id="acme", webhook_id="w-2", triggered_at="2025-04-23T00:00:00Z"
    )
    assert e.type == "product.deleted" and e.product.id == "9554194432293"
    assert e.product.version == 1745366400000


def test_unknown_topic_is_refused():
    with pytest.raises(ValueError, match="unsupported Shopify topic"):
        shopify.to_event("orders/create", UPDATE, tenant_id="a", webhook_id="w", triggered_at=None)


def shopify_post(client, tenant, doc, secret, topic="products/update", webhook_id="w-1"):
    body = json.dumps(doc).encode()
    sig = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    return client.post(
        f"/v1/catalog/shopify/{tenant}",
        content=body,
        headers={
            "X-Shopify-Topic": topic,
            "X-Shopify-Hmac-Sha256": sig,
            "X-Shopify-Webhook-Id": webhook_id,
            "X-Shopify-Shop-Domain": "acme.myshopify.com",
            "Content-Type": "application/json",
        },
    )


@pytest.mark.integration
def test_shopify_route_verifies_and_deduplicates(settings, sessions):
    with sessions.begin() as s:
        creds = create_tenant(s, "Acme", "acme")
    with TestClient(create_app(settings)) as client:
        ok = shopify_post(client, "acme", UPDATE, creds.webhook_secret)
        assert ok.status_code == 202 and ok.json()["accepted"] == ["shopify:w-1"]
        again = shopify_post(client, "acme", UPDATE, creds.webhook_secret)  # Shopify's retry
        assert again.json() == {"accepted": [], "duplicates": ["shopify:w-1"]}
        assert shopify_post(client, "acme", UPDATE, "wrong", webhook_id="w-9").status_code == 401
        assert shopify_post(client, "nobody", UPDATE, creds.webhook_secret).status_code == 404
        bad = shopify_post(client, "acme", UPDATE, creds.webhook_secret, topic="orders/create", webhook_id="w-3")
        assert bad.status_code == 422 and "unsupported Shopify topic" in bad.text
        gone = shopify_post(client, "acme", DELETE, creds.webhook_secret, topic="products/delete", webhook_id="w-4")
        assert gone.status_code == 202
