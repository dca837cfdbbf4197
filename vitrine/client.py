"""Small HTTP clients for vitrine's API, as a retailer or a storefront would call it."""

from __future__ import annotations

import json
from collections.abc import Sequence

import httpx

from recommender import signing


class CatalogClient:
    """Sends signed catalog events (the retailer's side of the webhook)."""

    def __init__(self, base_url: str, tenant_id: str, webhook_secret: str, *, timeout_s: float = 30.0):
        self.tenant_id = tenant_id
        self._secret = webhook_secret
        self._http = httpx.Client(base_url=base_url, timeout=timeout_s)

    def send(self, events: Sequence[dict] | dict) -> httpx.Response:
        body = json.dumps(events, default=str).encode()
        return self._http.post(
            "/v1/catalog/events",
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-Vitrine-Tenant": self.tenant_id,
                signing.HEADER: signing.sign(self._secret, body),
            },
        )

    def close(self) -> None:
        self._http.close()


class StorefrontClient:
    """Asks for recommendations and reports interactions with a storefront key."""

    def __init__(self, base_url: str, storefront_key: str, *, timeout_s: float = 30.0):
        self._http = httpx.Client(base_url=base_url, timeout=timeout_s, headers={"X-Vitrine-Key": storefront_key})

    def recommendations(self, product_id: str, *, user_id: str, limit: int = 10, **params) -> httpx.Response:
        return self._http.get(
            "/v1/recommendations", params={"product_id": product_id, "user_id": user_id, "limit": limit, **params}
        )

    def events(self, events: list[dict] | dict) -> httpx.Response:
        return self._http.post("/v1/events", json=events)

    def close(self) -> None:
        self._http.close()


class AdminClient:
    """The tenant's admin API (train, deploy, experiments) with its admin key."""

    def __init__(self, base_url: str, admin_key: str, *, timeout_s: float = 30.0):
        self._http = httpx.Client(base_url=base_url, timeout=timeout_s, headers={"X-Vitrine-Admin-Key": admin_key})

    def get(self, path: str, **params) -> httpx.Response:
        return self._http.get(path, params=params or None)

    def post(self, path: str, body: dict | None = None) -> httpx.Response:
        return self._http.post(path, json=body) if body is not None else self._http.post(path)

    def close(self) -> None:
        self._http.close()
