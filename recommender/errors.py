"""How the API answers bad input and outages: bounded 422s, a 422 for JSON nested too deep, 503 without Postgres.

A 422 says where and why (at most MAX_ERRORS entries, each string cut short), never what was sent:
echoing the input turned a 100 MB body into a 200 MB answer, and a NaN or 50,000-deep input into one
that could not be serialised at all (a 500, and uvicorn dropped the keep-alive connection).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException

from recommender import metrics

log = logging.getLogger(__name__)

MAX_ERRORS = 20
MAX_TEXT = 200
RETRY_AFTER_S = "5"
# Connection refused or lost, the database shutting down or refusing connections, a pool that cannot
# hand out a connection in time: the request was fine, the database was not there for it.
DATABASE_DOWN = (OperationalError, InterfaceError, PoolTimeout)


def _cut(value):
    return value[:MAX_TEXT] if isinstance(value, str) else value


def error_detail(errors: Sequence[Mapping]) -> list[dict]:
    """Pydantic-style errors as `{loc, msg, type}`: the first MAX_ERRORS, strings cut to MAX_TEXT characters."""
    out = []
    for e in errors[:MAX_ERRORS]:
        msg = e["msg"]
        error = (e.get("ctx") or {}).get("error")
        if e["type"] == "json_invalid" and isinstance(error, str):  # what the parser objected to
            msg = f"{msg}: {error}"
        out.append({"loc": [_cut(p) for p in e["loc"]][:16], "msg": _cut(msg), "type": _cut(e["type"])})
    return out


def unprocessable(errors: Sequence[Mapping], route: str) -> JSONResponse:
    """The 422 answer for `errors`, counted by route and the first error's type."""
    metrics.INVALID_REQUESTS.labels(route, errors[0]["type"] if errors else "unknown").inc()
    return JSONResponse({"detail": error_detail(errors), "errors": len(errors)}, status_code=422)


async def request_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    """Handler of FastAPI's RequestValidationError: a bounded 422."""
    route = request.scope.get("route")
    return unprocessable(exc.errors(), route.path if route is not None else "?")


async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """Handler of DATABASE_DOWN errors: 503 with Retry-After, never a 500."""
    metrics.UNAVAILABLE.labels("database").inc()
    log.warning(
        "%s %s: database unavailable: %s",
        request.method,
        request.url.path,
        str(getattr(exc, "orig", None) or exc).strip()[:300],
    )
    return JSONResponse(
        {"detail": "database unavailable; retry later"}, status_code=503, headers={"Retry-After": RETRY_AFTER_S}
    )


_HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def _documented_methods(app, path: str) -> set[str]:
    """The methods the OpenAPI schema documents for `path` (the table is built once per app)."""
    table = getattr(app.state, "allow_table", None)
    if table is None:
        # re.escape turns each "{param}" of a path template into "\\{param\\}": one segment.
        table = app.state.allow_table = [
            (
                re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(p)) + "$"),
                {m.upper() for m in ops if m in _HTTP_METHODS},
            )
            for p, ops in app.openapi()["paths"].items()
        ]
    return {m for pattern, methods in table if pattern.match(path) for m in methods}


async def method_not_allowed(request: Request, exc: HTTPException) -> JSONResponse:
    """405 whose `Allow` names every method the schema documents for the path.

    Starlette names only the methods of the first route whose path matched, so where two operations share
    a path (GET and POST /v1/experiments) `Allow` left one of them out.
    """
    allowed = _documented_methods(request.app, request.url.path) or set(exc.headers["Allow"].split(", "))
    return JSONResponse({"detail": exc.detail}, status_code=405, headers={"Allow": ", ".join(sorted(allowed))})


class _JSONRequest(Request):
    async def json(self):
        try:
            return await super().json()
        # FastAPI turns a JSONDecodeError into a 422 naming the problem, anything else into a bare 400.
        except RecursionError:
            raise json.JSONDecodeError("nested too deeply", "", 0) from None
        except UnicodeDecodeError as exc:
            raise json.JSONDecodeError("not UTF-8", "", exc.start) from None


class JSONRoute(APIRoute):
    """The route class of every router: a body too deep to parse or not UTF-8 is a 422 like any malformed JSON."""

    def get_route_handler(self):
        """The default handler, given a request whose JSON parsing reports deep nesting as malformed JSON."""
        handler = super().get_route_handler()

        async def route_handler(request: Request):
            return await handler(_JSONRequest(request.scope, request.receive))

        return route_handler
