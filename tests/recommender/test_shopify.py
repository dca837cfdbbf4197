"""Shopify product webhooks, with payloads shaped like Shopify's documented examples."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from db.tenants import create_tenant
from recommender import shopify
from recommender.app import create_app
from streams.topics import PRODUCT_EVENTS
from tests.helpers import read_topic_records
from tests.recommender.helpers import shopify_post

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
        # A topic vitrine does not use: acknowledged (Shopify retries any non-2xx for hours) and counted.
        before = REGISTRY.get_sample_value("vitrine_shopify_ignored_webhooks_total", {"topic": "orders/create"}) or 0
        order = shopify_post(client, "acme", {"id": 1}, creds.webhook_secret, topic="orders/create", webhook_id="w-3")
        assert (order.status_code, order.json()) == (200, {"ignored": "orders/create"})
        after = REGISTRY.get_sample_value("vitrine_shopify_ignored_webhooks_total", {"topic": "orders/create"})
        assert after == before + 1
        forged = shopify_post(client, "acme", {"id": 1}, "wrong", topic="orders/create", webhook_id="w-5")
        assert forged.status_code == 401  # authenticity first: an ignored topic is still verified
        gone = shopify_post(client, "acme", DELETE, creds.webhook_secret, topic="products/delete", webhook_id="w-4")
        assert gone.status_code == 202


# A product as Shopify's REST product resource documents it (products/update), with three variants at
# 29 / 35 / 39, one of them sold out without an `inventory_management` field (newer API versions omit it).
VARIANTS = {
    "id": 632910392,
    "title": "IPod Nano - 8GB",
    "status": "active",
    "vendor": "Apple",
    "product_type": "Cult Products",
    "handle": "ipod-nano",
    "body_html": "<p>It's the <strong>small</strong> iPod with a big idea:&nbsp;<em>Video</em>.</p>"
    "<ul><li>8GB</li></ul>",
    "tags": "Emotive, Flash Memory, MP3, Music",
    "updated_at": "2025-04-22T14:30:00-05:00",
    "variants": [
        {"id": 808950810, "price": "35.00", "inventory_policy": "deny", "inventory_quantity": 0, "image_id": 850703190},
        {"id": 49148385, "price": "29.00", "inventory_policy": "deny", "inventory_quantity": 0, "image_id": 562641783},
        {"id": 39072856, "price": "39.00", "inventory_policy": "deny", "inventory_quantity": 0, "image_id": None},
    ],
    "images": [
        {"id": 850703190, "position": 1, "src": "https://cdn.shopify.com/s/files/ipod-nano.png", "variant_ids": []},
        {
            "id": 562641783,
            "position": 2,
            "src": "https://cdn.shopify.com/s/files/ipod-nano-2.png",
            "variant_ids": [49148385, 39072856],
        },
    ],
}


def _product(doc, **kw):
    return shopify.to_event("products/update", doc, tenant_id="a", webhook_id="w", triggered_at=None, **kw).product


def test_quantity_zero_with_deny_and_no_inventory_management_is_sold_out():
    # The case: stored in_stock = true before, so a sold-out product was served at rank 1.
    assert _product(VARIANTS).in_stock is False


@pytest.mark.parametrize(
    ("variant", "available"),
    [
        ({"inventory_management": "shopify", "inventory_policy": "deny", "inventory_quantity": 0}, False),
        ({"inventory_management": "shopify", "inventory_policy": "deny", "inventory_quantity": -2}, False),
        ({"inventory_management": "shopify", "inventory_policy": "deny", "inventory_quantity": 1}, True),
        ({"inventory_management": "shopify", "inventory_policy": "continue", "inventory_quantity": 0}, True),
        ({"inventory_management": None, "inventory_policy": "deny", "inventory_quantity": 0}, True),  # untracked
        ({"inventory_management": "fulfillment-co", "inventory_policy": "deny", "inventory_quantity": 0}, False),
        ({"inventory_policy": "deny", "inventory_quantity": 0}, False),  # field absent: the quantity decides
        ({"inventory_policy": "deny"}, True),  # nothing known about stock
    ],
)
def test_variant_stock_rules(variant, available):
    assert shopify.variant_available(variant) is available


def test_all_prices_currency_variant_images_and_text_are_kept():
    in_stock = {
        **VARIANTS,
        "variants": [*VARIANTS["variants"][:2], {**VARIANTS["variants"][2], "inventory_quantity": 4}],
    }
    p = _product(in_stock, currency="EUR")
    assert p.in_stock is True
    assert (str(p.price), p.currency, p.attributes["price_min"], p.attributes["price_max"]) == (
        "29.00",
        "EUR",
        "29.00",
        "39.00",
    )
    assert p.attributes["variant_image:808950810"] == "https://cdn.shopify.com/s/files/ipod-nano.png"
    assert p.attributes["variant_image:49148385"] == "https://cdn.shopify.com/s/files/ipod-nano-2.png"
    assert p.attributes["variant_image:39072856"] == "https://cdn.shopify.com/s/files/ipod-nano-2.png"  # image's side
    assert p.attributes["description"] == "It's the small iPod with a big idea: Video. 8GB"
    assert (p.attributes["vendor"], p.attributes["product_type"], p.attributes["tags"]) == (
        "Apple",
        "Cult Products",
        "Emotive, Flash Memory, MP3, Music",
    )


def test_more_than_twenty_images_keeps_the_first_twenty():
    doc = {**UPDATE, "images": [{"id": i, "position": i, "src": f"https://cdn.shopify.com/{i}.jpg"} for i in range(25)]}
    assert [str(u) for u in _product(doc).image_urls][-1] == "https://cdn.shopify.com/19.jpg"


@pytest.mark.integration
def test_the_mapped_product_is_what_reaches_kafka_and_unused_topics_get_200(settings, sessions):
    with sessions.begin() as s:
        creds = create_tenant(s, "Acme", "acme")
    with TestClient(create_app(settings)) as client:
        ok = shopify_post(client, "acme?currency=EUR", VARIANTS, creds.webhook_secret, webhook_id="w-7")
        assert ok.status_code == 202, ok.text
        bad = shopify_post(client, "acme?currency=euro", VARIANTS, creds.webhook_secret, webhook_id="w-8")
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "currency"]
        level = {"inventory_item_id": 271878346596884015, "location_id": 24826418, "available": 0}
        for topic in ("inventory_levels/update", "orders/create", "app/uninstalled"):
            ack = shopify_post(client, "acme", level, creds.webhook_secret, topic=topic, webhook_id=f"w-{topic}")
            assert (ack.status_code, ack.json()) == (200, {"ignored": topic})
    records = read_topic_records(settings.kafka_bootstrap, settings.topic(PRODUCT_EVENTS.name))
    assert [k for k, _ in records] == ["acme:632910392"]  # the ignored topics sent nothing
    product = json.loads(records[0][1])["product"]
    assert (product["price"], product["currency"], product["in_stock"]) == ("29.00", "EUR", False)
    assert product["attributes"]["price_max"] == "39.00"
