"""Sign-in that survives reloads: the signed cookie (valid, tampered, expired, of a revoked key, a ticket used as
a cookie), the ticket exchange route, and throttled attempts. The browser's cookie header is the process edge:
AppTest cannot send one, so `auth.request_cookie` is replaced; the real round trip runs in Chromium
(tests/vitrine/test_screenshots.py signs in once and opens deep links with the cookie)."""

from __future__ import annotations

import time

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient
from streamlit.testing.v1 import AppTest

from dashboards import auth
from dashboards.session_routes import ROUTES
from tests.dashboards.helpers import TIMEOUT_S, texts
from tests.dashboards.seed import APP_DIR, TENANT

SECRET = "x" * 40


def _grant(expires_in: float = 3600, nonce: str = "n1", **kw) -> auth.Grant:
    base = {"kind": auth.PASSWORD, "tenants": None, "fingerprint": "f" * 32}
    return auth.Grant(**(base | kw), expires=time.time() + expires_in, nonce=nonce)


def test_tokens_verify_only_untampered_unexpired_and_for_their_purpose():
    token = auth.issue(_grant(), SECRET, "session")
    grant = auth.verify(token, SECRET, "session")
    assert (grant.kind, grant.tenants, grant.nonce) == (auth.PASSWORD, None, "n1")
    payload, signature = token.rsplit(".", 1)
    assert auth.verify(payload[:-2] + "AA." + signature, SECRET, "session") is None  # tampered payload
    # a flipped character inside the signature (the last one may only carry base64 padding bits)
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    assert auth.verify(f"{payload}.{flipped}", SECRET, "session") is None
    assert auth.verify(token, "y" * 40, "session") is None  # another server's secret
    assert auth.verify(token, SECRET, "ticket") is None  # a cookie is not a ticket
    assert auth.verify(auth.issue(_grant(expires_in=-1), SECRET, "session"), SECRET, "session") is None  # expired
    assert auth.verify("garbage", SECRET, "session") is None


def test_the_cookie_never_carries_the_credential(seeded):
    grant = auth.check_credential(seeded_url(), seeded.admin_key, "")
    token = auth.issue(grant, SECRET, "session")
    assert grant.tenants == [TENANT] and grant.kind == auth.TENANT
    assert seeded.admin_key not in token and auth.password_digest(seeded.admin_key) not in token


def seeded_url() -> str:
    from dashboards.data import get_settings

    return get_settings().database_url


def _app(monkeypatch, cookie: str | None) -> AppTest:
    monkeypatch.setattr(auth, "request_cookie", lambda: cookie)
    return AppTest.from_file(str(APP_DIR / "app.py"), default_timeout=TIMEOUT_S).run()


def _signed_in(at: AppTest) -> bool:
    return not at.exception and "Sign in" not in [b.label for b in at.button] and bool(at.sidebar.selectbox)


@pytest.fixture
def secret(monkeypatch):
    monkeypatch.setenv("VITRINE_DASHBOARD_SECRET", SECRET)
    return SECRET


def test_a_valid_cookie_signs_in_a_new_session(seeded, secret, monkeypatch):
    grant = auth.check_credential(seeded_url(), seeded.admin_key, "")
    cookie = auth.issue(auth.Grant(grant.kind, grant.tenants, grant.fingerprint, time.time() + 60), secret, "session")
    at = _app(monkeypatch, cookie)
    assert _signed_in(at), texts(at)
    assert at.session_state["allowed_tenants"] == [TENANT] and at.sidebar.selectbox[0].options == [TENANT]


@pytest.mark.parametrize("case", ["tampered", "expired", "ticket", "revoked"])
def test_a_bad_cookie_shows_the_sign_in_form(seeded, secret, monkeypatch, sessions, case):
    grant = auth.check_credential(seeded_url(), seeded.admin_key, "")
    expires = time.time() + (-5 if case == "expired" else 60)
    cookie = auth.issue(auth.Grant(grant.kind, grant.tenants, grant.fingerprint, expires), secret,
                        "ticket" if case == "ticket" else "session")  # fmt: skip
    if case == "tampered":  # another tenant's name in a payload signed for acme
        other = auth.issue(auth.Grant(grant.kind, ["empty-shop"], grant.fingerprint, expires), secret, "session")
        cookie = other.rsplit(".", 1)[0] + "." + cookie.rsplit(".", 1)[1]
    if case == "revoked":
        from db.tenants import revoke

        with sessions() as session, session.begin():
            revoke(session, TENANT, "admin_key", actor="test")
    at = _app(monkeypatch, cookie)
    assert not at.exception
    assert [b.label for b in at.button] == ["Sign in"]
    assert "allowed_tenants" not in at.session_state


def test_sign_in_issues_a_single_use_ticket_the_route_turns_into_an_httponly_cookie(seeded, secret, monkeypatch):
    at = _app(monkeypatch, None)
    at.text_input[0].input(seeded.admin_key)
    at.button[0].click().run()
    assert _signed_in(at)
    # the page handed the browser its ticket in a script that POSTs it to the route
    script = next(h.value for h in at.html if auth.SESSION_PATH in h.value)
    ticket = script.split("body: ")[1].split('"')[1]
    assert seeded.admin_key not in script

    client = TestClient(Starlette(routes=ROUTES), base_url="http://dash.test")
    answer = client.post(auth.SESSION_PATH, content=ticket, headers={"Origin": "http://dash.test"})
    assert answer.status_code == 204
    set_cookie = answer.headers["set-cookie"]
    assert set_cookie.startswith(f"{auth.COOKIE}=") and "HttpOnly" in set_cookie and "SameSite=strict" in set_cookie
    cookie = set_cookie.split(";")[0].split("=", 1)[1]
    assert auth.verify(cookie, secret, "session").tenants == [TENANT]
    assert client.post(auth.SESSION_PATH, content=ticket).status_code == 409  # single use
    assert client.post(auth.SESSION_PATH, content=ticket[:-3] + "abc").status_code == 400
    other = client.post(auth.SESSION_PATH, content=ticket, headers={"Origin": "https://evil.example"})
    assert other.status_code == 403
    out = client.post(auth.SIGN_OUT_PATH, headers={"Origin": "http://dash.test"})
    assert out.status_code == 204 and 'vitrine_session="";' in out.headers["set-cookie"].replace("=;", '="";')


def test_sign_in_attempts_are_throttled_per_client(seeded, secret, monkeypatch):
    monkeypatch.setenv("VITRINE_DASHBOARD_SIGN_IN_LIMIT", "3/minute")
    at = _app(monkeypatch, None)
    for _ in range(3):
        at.text_input[0].input("vak_wrong")
        at.button[0].click().run()
        assert "not valid" in texts(at)
    at.text_input[0].input(seeded.admin_key)  # even the right key waits: the credential is not checked at all
    at.button[0].click().run()
    assert "Too many sign-in attempts" in texts(at)
    assert "allowed_tenants" not in at.session_state
