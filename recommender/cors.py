"""CORS for storefronts calling the API from a browser, with the allowed origins kept per tenant.

Built on Starlette's CORSMiddleware (preflight checks of method, headers and max-age), with the
origin list read from `tenants.cors_origins` (db/cors_origins.py) and cached for
`VITRINE_LOOKUP_CACHE_TTL_S`, so `vitrine tenant cors` takes effect within that time, no restart.

- A preflight (OPTIONS) carries no key, so it is answered 200 for an origin that any tenant allows.
- The real request names its tenant by its key: the answer carries `Access-Control-Allow-Origin`
  only if *that* tenant allows the origin (the key's dependency records the tenant on the request
  state), so a browser on one retailer's shop cannot read answers given for another retailer's key.
- An origin no tenant allows gets no CORS header at all (a preflight from it is answered 400);
  calls without an `Origin` header (servers, curl) are not affected.
- Only the storefront's own header (`X-Vitrine-Key`) is allowed cross-origin: the admin key is not,
  so the admin API cannot be called from a browser on another origin.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recommender.ttl_cache import MISSING, TTLCache

ALLOW_METHODS = ("GET", "POST")
ALLOW_HEADERS = ("X-Vitrine-Key", "Content-Type")
EXPOSE_HEADERS = ("Retry-After",)  # a browser client must see how long to wait after a 429 or 503
MAX_AGE_S = 600
TENANT_STATE = "tenant_id"  # request.state attribute the key dependency sets (recommender/deps.py)

OriginTable = dict[str, frozenset[str]]


class TenantCORSMiddleware(CORSMiddleware):
    """Starlette's CORS with a per-tenant origin table, loaded by `load_table` (blocking) and cached."""

    def __init__(self, app: ASGIApp, load_table: Callable[[], OriginTable], cache: TTLCache) -> None:
        super().__init__(
            app,
            allow_origins=(),
            allow_methods=ALLOW_METHODS,
            allow_headers=ALLOW_HEADERS,
            expose_headers=EXPOSE_HEADERS,
            max_age=MAX_AGE_S,
        )
        self._load_table, self._cache = load_table, cache
        self._table: OriginTable = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and Headers(scope=scope).get("origin") is not None:
            table = self._cache.get("origins")
            if table is MISSING:
                table = await run_in_threadpool(self._load_table)
                self._cache.put("origins", table)
            self._table = table  # one table for all tenants: swapping the reference is atomic
            scope.setdefault("state", {})  # so the key dependency's request.state lands in this very dict
        await super().__call__(scope, receive, send)

    def is_allowed_origin(self, origin: str) -> bool:
        return origin in self._table

    def preflight_response(self, request_headers: Headers) -> Response:
        if not self.is_allowed_origin(request_headers["origin"]):
            return PlainTextResponse("Disallowed CORS origin", status_code=400)  # no CORS headers to act on
        return super().preflight_response(request_headers)

    async def simple_response(self, scope: Scope, receive: Receive, send: Send, request_headers: Headers) -> None:
        origin = request_headers.get("origin")
        if origin is None:
            await self.app(scope, receive, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                tenants = self._table.get(origin, frozenset())
                tenant = scope.get("state", {}).get(TENANT_STATE)
                # No tenant yet (a 401, a 404 before authentication): the browser may read the error.
                if tenants and (tenant is None or tenant in tenants):
                    headers.update(self.simple_headers)
                    self.allow_explicit_origin(headers, origin)
                else:
                    headers.append("Vary", "Origin")
            await send(message)

        await self.app(scope, receive, send_with_cors)
