"""Shopify product webhooks (products/create, products/update, products/delete) as vitrine events.

Shopify signs the raw body: `X-Shopify-Hmac-Sha256` = base64(HMAC-SHA256(secret, body)), with no
timestamp in the signed material, so replays are stopped by de-duplicating `X-Shopify-Webhook-Id`
(which stays the same across Shopify's retries of one delivery). The tenant stores the app's
webhook signing secret as its webhook secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable
from datetime import UTC, datetime

from core.contracts import CatalogEvent

TOPICS = {
    "products/create": "product.upserted",
    "products/update": "product.upserted",
    "products/delete": "product.deleted",
}


def verify(header: str | None, body: bytes, secrets: Iterable[str]) -> bool:
    """Constant-time check of the base64 HMAC against every active secret."""
    if not header:
        return False
    ok = False
    for secret in secrets:
        expected = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
        ok |= hmac.compare_digest(expected.encode(), header.strip().encode())  # bytes: any header text compares
    return ok


def _millis(ts: str | None) -> int | None:
    if not ts:
        return None
    return int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000)


def to_event(topic: str, doc: dict, *, tenant_id: str, webhook_id: str, triggered_at: str | None) -> CatalogEvent:
    """Map one Shopify product payload to a vitrine catalog event (ValueError/ValidationError if it cannot)."""
    kind = TOPICS.get(topic)
    if kind is None:
        raise ValueError(f"unsupported Shopify topic {topic!r}; expected one of {sorted(TOPICS)}")
    if "id" not in doc:
        raise ValueError("Shopify payload has no product id")
    # Versions order updates of one product: Shopify's updated_at (ms), else when Shopify sent it.
    version = _millis(doc.get("updated_at")) or _millis(triggered_at) or int(datetime.now(UTC).timestamp() * 1000)
    product: dict = {"id": str(doc["id"]), "version": version}
    if kind == "product.upserted":
        variants = doc.get("variants") or []
        images = sorted(doc.get("images") or [], key=lambda im: im.get("position") or 0)
        urls = [im["src"] for im in images if im.get("src")]
        if not urls and (doc.get("image") or {}).get("src"):
            urls = [doc["image"]["src"]]
        product.update(
            title=doc.get("title") or "",
            category=doc.get("product_type") or None,
            price=variants[0].get("price") if variants else None,
            in_stock=doc.get("status", "active") == "active" and (not variants or any(_available(v) for v in variants)),
            image_urls=urls,
            attributes={k: doc.get(k) for k in ("vendor", "handle", "tags", "status") if doc.get(k) is not None},
        )
    return CatalogEvent.model_validate(
        {
            "event_id": f"shopify:{webhook_id}",
            "tenant_id": tenant_id,
            "type": kind,
            "occurred_at": triggered_at or datetime.now(UTC).isoformat(),
            "product": product,
        }
    )


def _available(variant: dict) -> bool:
    if variant.get("inventory_management") in (None, "") or variant.get("inventory_policy") == "continue":
        return True
    return (variant.get("inventory_quantity") or 0) > 0
