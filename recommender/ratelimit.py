"""Rate limits per key: a storefront or admin key over its limit is answered 429 with Retry-After.

The counting is the `limits` library's moving window; the counters live where
`VITRINE_RATE_LIMIT_STORAGE` says (memory:// = per API process, so N replicas allow up to N times
the limit; a redis:// URI shares them). Keys are counted by their SHA-256 digest, never kept in
clear. Requests without a key are not counted here: they are answered 401 at once. A counter
store that fails lets the request through (rate limiting must not take the storefront down).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time

from limits import RateLimitItem, parse_many
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string
from prometheus_client import Counter
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

RATE_LIMITED = Counter("vitrine_api_rate_limited_total", "Requests answered 429, by key kind", ["key_kind"])
STORE_ERRORS = Counter("vitrine_api_rate_limit_store_errors_total", "Rate-limit checks skipped: counter store failed")


class RateLimitMiddleware:
    """Plain ASGI (no BaseHTTPMiddleware: see LatencyMiddleware): one moving window per key and limit."""

    def __init__(self, app: ASGIApp, *, storefront: str, admin: str, storage_uri: str = "memory://") -> None:
        self.app = app
        rules = ((b"x-vitrine-key", "storefront", storefront), (b"x-vitrine-admin-key", "admin", admin))
        self.rules: list[tuple[bytes, str, list[RateLimitItem]]] = [
            (header, kind, parse_many(limit)) for header, kind, limit in rules if limit.strip()
        ]
        uri = storage_uri if storage_uri.startswith("async+") else f"async+{storage_uri}"
        self.limiter = MovingWindowRateLimiter(storage_from_string(uri))
        self._last_store_error = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.rules:
            headers = dict(scope["headers"])  # ASGI header names are lower-case bytes
            for header, kind, items in self.rules:
                credential = headers.get(header)
                if credential:
                    retry_after = await self._over_limit(kind, hashlib.sha256(credential).hexdigest(), items)
                    if retry_after is not None:
                        RATE_LIMITED.labels(kind).inc()
                        detail = f"rate limit of this {kind} key exceeded ({'; '.join(map(str, items))}); retry later"
                        response = JSONResponse(
                            {"detail": detail}, status_code=429, headers={"Retry-After": str(retry_after)}
                        )
                        await response(scope, receive, send)
                        return
        await self.app(scope, receive, send)

    async def _over_limit(self, kind: str, digest: str, items: list[RateLimitItem]) -> int | None:
        """Seconds until this key may try again, or None while it is within every limit."""
        try:
            for item in items:
                if not await self.limiter.hit(item, kind, digest):
                    stats = await self.limiter.get_window_stats(item, kind, digest)
                    return max(1, math.ceil(stats.reset_time - time.time()))
        except Exception as exc:  # redis down, a timeout: serve rather than fail every request
            STORE_ERRORS.inc()
            now = time.monotonic()
            if now - self._last_store_error > 60:  # one line a minute, not one per request
                self._last_store_error = now
                log.warning("rate limiting skipped: counter store failed: %s", type(exc).__name__)
        return None


def document_rate_limits(app) -> None:
    """Declare the 429 in the OpenAPI schema of every operation that takes a key (the middleware answers it)."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()  # FastAPI caches this very dict in app.openapi_schema: edited in place once
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                if isinstance(operation, dict) and operation.get("security"):
                    operation.setdefault("responses", {}).setdefault("429", TOO_MANY_REQUESTS)
        return schema

    app.openapi = openapi


TOO_MANY_REQUESTS = {
    "description": "Too many requests with this key: retry after `Retry-After` seconds",
    "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait"}},
    "content": {"application/json": {"schema": {"type": "object", "properties": {"detail": {"type": "string"}}}}},
}
