"""Shopify webhooks (products/create, products/update, products/delete) as vitrine events.

Shopify signs the raw body: `X-Shopify-Hmac-Sha256` = base64(HMAC-SHA256(secret, body)), with no
timestamp in the signed material, so replays are stopped by de-duplicating `X-Shopify-Webhook-Id`
(which stays the same across Shopify's retries of one delivery). Shopify chooses the signing
secret; `vitrine tenant set-secret T --secret-stdin` (or `PUT /v1/tenant/webhook-secret`) stores it.

Mapping rules (docs/ingestion.md, "Shopify"):

- Stock, per variant: `inventory_policy: continue` sells when out of stock -> available. A variant
  whose `inventory_management` is present and null is not tracked by Shopify -> available. Otherwise
  (a fulfilment service named, or the field absent, as in newer API versions) the quantity decides:
  `inventory_quantity` <= 0 -> sold out; no quantity at all -> available. A product is in stock when
  its status is `active` and any variant is available (no variants: in stock).
- Price: the lowest variant price is `price`; `price_min`/`price_max` (strings, exact) are attributes.
- Currency: Shopify's product payload has none (prices are in the shop's currency), so it comes from
  the webhook address (`?currency=EUR`), set once when the subscription is created.
- Images: ordered by `position`, at most 20 (the contract's cap); `variant_image:<variant id>` names
  each variant's image (its `image_id`, or the images' `variant_ids`).
- Text: `body_html` as plain text (`description`), `vendor`, `product_type`, `tags`, `handle`, `status`.

Topics vitrine does not use are acknowledged with 200 and counted by topic; `inventory_levels/update`
is one of them: it names an inventory item and a location, not a product or variant, so it cannot
be applied without a mapping vitrine does not keep; the quantities reach vitrine through
products/update instead.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from html.parser import HTMLParser

from prometheus_client import Counter

from core.contracts import CatalogEvent

TOPICS = {
    "products/create": "product.upserted",
    "products/update": "product.upserted",
    "products/delete": "product.deleted",
}
IGNORED = Counter(
    "vitrine_shopify_ignored_webhooks_total", "Authentic Shopify webhooks of topics vitrine does not use", ["topic"]
)
_TOPIC = re.compile(r"^[a-z_]{1,40}/[a-z_]{1,40}$")  # Shopify's shape; anything else is one label value
MAX_IMAGES = 20  # core.contracts.Product.image_urls
MAX_VARIANT_IMAGES = 100  # attributes stay small; Shopify allows 2,048 variants
MAX_DESCRIPTION = 5000


def verify(header: str | None, body: bytes, secrets: Iterable[str]) -> bool:
    """Constant-time check of the base64 HMAC against every active secret."""
    if not header:
        return False
    ok = False
    for secret in secrets:
        expected = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
        ok |= hmac.compare_digest(expected.encode(), header.strip().encode())  # bytes: any header text compares
    return ok


def count_ignored(topic: str) -> None:
    """Count an authentic delivery of a topic vitrine does not use (bounded label values)."""
    IGNORED.labels(topic if _TOPIC.match(topic) else "other").inc()


def _millis(ts: str | None) -> int | None:
    if not ts:
        return None
    return int(datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() * 1000)


class _Text(HTMLParser):
    """Collects the text of an HTML fragment (stdlib parser: tolerant of broken markup, never fetches)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)

    def handle_starttag(self, tag, attrs) -> None:
        if tag in ("br", "p", "li", "div", "tr", "h1", "h2", "h3", "h4"):
            self.parts.append(" ")  # block boundaries separate words


def html_text(fragment: str) -> str:
    """The visible text of `body_html`, whitespace collapsed, at most MAX_DESCRIPTION characters."""
    parser = _Text()
    parser.feed(fragment)
    parser.close()
    return " ".join("".join(parser.parts).split())[:MAX_DESCRIPTION]


def variant_available(variant: dict) -> bool:
    """Whether a shopper can buy this variant now (the rules in the module docstring)."""
    if variant.get("inventory_policy") == "continue":
        return True
    if "inventory_management" in variant and variant["inventory_management"] in (None, ""):
        return True  # explicitly untracked: Shopify never runs out
    quantity = variant.get("inventory_quantity")
    return quantity is None or int(quantity) > 0


def _prices(variants: list[dict]) -> list[Decimal]:
    out = []
    for v in variants:
        try:
            p = Decimal(str(v.get("price")))
        except InvalidOperation:
            continue
        if p.is_finite() and p >= 0:
            out.append(p)
    return out


def _variant_images(doc: dict, images: list[dict]) -> dict[str, str]:
    by_id = {im.get("id"): im["src"] for im in images if im.get("src")}
    links: dict[str, str] = {}
    for im in images:  # the image's side of the link
        for vid in im.get("variant_ids") or []:
            if im.get("src"):
                links[str(vid)] = im["src"]
    for v in doc.get("variants") or []:  # the variant's side wins: it is the one Shopify shows
        src = by_id.get(v.get("image_id"))
        if src and v.get("id") is not None:
            links[str(v["id"])] = src
    return {f"variant_image:{vid}": src for vid, src in list(links.items())[:MAX_VARIANT_IMAGES]}


def _upsert_fields(doc: dict, currency: str | None) -> dict:
    variants = doc.get("variants") or []
    images = sorted(doc.get("images") or [], key=lambda im: im.get("position") or 0)
    urls = [im["src"] for im in images if im.get("src")]
    if not urls and (doc.get("image") or {}).get("src"):
        urls = [doc["image"]["src"]]
    prices = _prices(variants)
    attributes = {k: doc.get(k) for k in ("vendor", "product_type", "handle", "tags", "status") if doc.get(k)}
    if isinstance(attributes.get("tags"), list):  # GraphQL-shaped payloads send a list
        attributes["tags"] = ", ".join(map(str, attributes["tags"]))
    if doc.get("body_html"):
        attributes["description"] = html_text(doc["body_html"])
    if prices:
        attributes.update(price_min=str(min(prices)), price_max=str(max(prices)))
    attributes.update(_variant_images(doc, images))
    return {
        "title": doc.get("title") or "",
        "category": doc.get("product_type") or None,
        "price": min(prices) if prices else None,
        "currency": currency,
        "in_stock": doc.get("status", "active") == "active" and (not variants or any(map(variant_available, variants))),
        "image_urls": urls[:MAX_IMAGES],
        "attributes": attributes,
    }


def to_event(
    topic: str,
    doc: dict,
    *,
    tenant_id: str,
    webhook_id: str,
    triggered_at: str | None,
    currency: str | None = None,
) -> CatalogEvent:
    """Map one Shopify product payload to a vitrine catalog event (ValueError/ValidationError if it cannot)."""
    kind = TOPICS.get(topic)
    if kind is None:
        raise ValueError(f"unsupported Shopify topic {topic!r}; expected one of {sorted(TOPICS)}")
    if not isinstance(doc, dict) or "id" not in doc:
        raise ValueError("Shopify payload has no product id")
    # Versions order updates of one product: Shopify's updated_at (ms), else when Shopify sent it.
    version = _millis(doc.get("updated_at")) or _millis(triggered_at) or int(datetime.now(UTC).timestamp() * 1000)
    product: dict = {"id": str(doc["id"]), "version": version}
    if kind == "product.upserted":
        product.update(_upsert_fields(doc, currency))
    return CatalogEvent.model_validate(
        {
            "event_id": f"shopify:{webhook_id}",
            "tenant_id": tenant_id,
            "type": kind,
            "occurred_at": triggered_at or datetime.now(UTC).isoformat(),
            "product": product,
        }
    )
