"""Helpers of the recommender tests: catalog rows with test vectors, a storefront request, a Shopify
delivery, a fake clock, the app under a real uvicorn."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import uvicorn
from sqlalchemy import text

from core.contracts import CatalogEvent
from db import catalog
from db.catalog import ImageResult, ItemRow
from streams.embedded_broker import free_port
from tests.helpers import wait_for


def put_product(s, tenant, pid, vec, *, category="shirts", in_stock=True, model_key="m@1", created=None):
    e = CatalogEvent.model_validate(
        {
            "event_id": f"{tenant}-{pid}",
            "tenant_id": tenant,
            "type": "product.upserted",
            "product": {
                "id": pid,
                "version": 1,
                "title": pid.upper(),
                "category": category,
                "in_stock": in_stock,
                "image_urls": [f"https://x.test/{pid}.jpg"],
            },
        }
    )
    items = None if vec is None else [ItemRow("whole", (0, 0, 1, 1), "product", 1.0, np.asarray(vec, np.float32))]
    catalog.upsert_product(
        s,
        e,
        [ImageResult(f"https://x.test/{pid}.jpg", 0, "ok", content_hash=pid, items=items)],
        model_key=model_key,
        dim=4,
    )
    if created:
        s.execute(
            text("UPDATE products SET created_at = :c WHERE tenant_id = :t AND external_id = :p"),
            {"c": created, "t": tenant, "p": pid},
        )


def rec(client, key, product, user="u1", **params):
    return client.get(
        "/v1/recommendations", headers={"X-Vitrine-Key": key}, params={"product_id": product, "user_id": user, **params}
    )


class Clock:
    """A clock for `TTLCache(clock=...)` that moves only when a test sets `now`."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@contextmanager
def serve(app) -> Iterator[int]:
    """Run `app` under a real uvicorn on 127.0.0.1 (lifespan included) and yield its port."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), 60, what="uvicorn to start")
        assert server.started, "uvicorn did not start (see the log above)"
        yield server.config.port
    finally:
        server.should_exit = True
        thread.join(30)


def shopify_post(client, tenant, doc, secret, topic="products/update", webhook_id="w-1"):
    """POST `doc` as Shopify delivers a webhook: base64 HMAC-SHA256 of the raw body with `secret`."""
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
