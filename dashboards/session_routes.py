"""The two HTTP routes beside the Streamlit app that set and clear the sign-in cookie (HttpOnly, so only a
response can set it; see `dashboards/auth.py`). `dashboards/server.py` mounts them."""

from __future__ import annotations

import logging
import time
from urllib.parse import urlsplit

import streamlit as st
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from dashboards import auth, data

log = logging.getLogger(__name__)
MAX_TICKET_BYTES = 4096


def _same_origin(request: Request) -> bool:
    # Browsers send Origin on every POST: another site's page must not plant (or drop) a session here.
    origin = request.headers.get("origin")
    return origin is None or urlsplit(origin).netloc == request.headers.get("host")


def _cookie_path() -> str:
    base = (st.get_option("server.baseUrlPath") or "").strip("/")
    return f"/{base}/" if base else "/"


async def exchange_ticket(request: Request) -> Response:
    """POST a sign-in ticket (60 s, single use) -> 204 with the session cookie; 400/403/409 otherwise."""
    if not _same_origin(request):
        return PlainTextResponse("cross-origin request refused", 403)
    body = (await request.body())[:MAX_TICKET_BYTES].decode("ascii", errors="replace").strip()
    grant = auth.verify(body, auth.server_secret(), "ticket")
    if grant is None:
        log.info("dashboard cookie exchange refused: invalid or expired ticket")
        return PlainTextResponse("invalid or expired ticket", 400)
    if not auth.SPENT_TICKETS.spend(grant):
        log.warning("dashboard cookie exchange refused: ticket already used")
        return PlainTextResponse("ticket already used", 409)
    lifetime = data.raw_settings().dashboard_session_s
    session = auth.Grant(grant.kind, grant.tenants, grant.fingerprint, time.time() + lifetime, grant.nonce)
    response = Response(status_code=204)
    response.set_cookie(
        auth.COOKIE,
        auth.issue(session, auth.server_secret(), "session"),
        max_age=int(lifetime),
        path=_cookie_path(),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


async def sign_out(request: Request) -> Response:
    """POST -> 204 deleting the session cookie."""
    if not _same_origin(request):
        return PlainTextResponse("cross-origin request refused", 403)
    response = Response(status_code=204)
    response.delete_cookie(auth.COOKIE, path=_cookie_path(), httponly=True, samesite="strict")
    return response


ROUTES = [
    Route(auth.SESSION_PATH, exchange_ticket, methods=["POST"]),
    Route(auth.SIGN_OUT_PATH, sign_out, methods=["POST"]),
]
