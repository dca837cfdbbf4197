"""Sign-in: a tenant admin key (that tenant only), or the operator's password / global admin key (all tenants).

A sign-in survives reloads and deep links through a signed, expiring, HttpOnly cookie:

1. the form checks the credential (throttled per client with `limits`) and keeps a `Grant` in the
   browser session;
2. the page hands the browser a *ticket* (the grant signed for 60 s, single use) that a few lines of
   JavaScript POST to `/_vitrine/session` (`dashboards/server.py`), which answers with the cookie:
   the grant signed for `VITRINE_DASHBOARD_SESSION_S`, `HttpOnly; SameSite=Strict` (`Secure` over HTTPS),
   so no script on the page can read it;
3. a new browser session (reload, deep link, new tab) reads it with `st.context.cookies`.

Tokens are itsdangerous `URLSafeSerializer` payloads signed with HMAC-SHA256 under
`VITRINE_DASHBOARD_SECRET`, one salt per purpose (a ticket is never accepted as a cookie and vice
versa). Neither carries a credential: only which tenants it opens and an HMAC fingerprint of the
credential's stored digest, checked again on every new browser session, so rotating or revoking
the admin key (after its grace period) or changing the password ends the cookies made with it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
from dataclasses import asdict, dataclass

import streamlit as st
from itsdangerous import BadData, URLSafeSerializer
from limits import parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from dashboards import data
from dashboards.ui import ALLOWED_KEY, TENANT_KEY

log = logging.getLogger(__name__)

# Set by `vitrine dashboard`: only a digest crosses the process boundary, never the password itself.
PASSWORD_DIGEST_ENV = "VITRINE_DASHBOARD_PASSWORD_SHA256"
GRANT_KEY = "sign_in_grant"
TICKET_KEY = "sign_in_ticket"  # waiting to be exchanged for the cookie by the browser
SIGN_OUT_KEY = "signing_out"
SIGNED_OUT_KEY = "signed_out"  # this browser session signed out: its opening cookie no longer counts
COOKIE = "vitrine_session"
SESSION_PATH = "/_vitrine/session"
SIGN_OUT_PATH = "/_vitrine/sign-out"
TICKET_S = 60.0
TENANT, PASSWORD, ADMIN_KEY = "tenant", "password", "admin_key"

# Without VITRINE_DASHBOARD_SECRET (an app started without `vitrine dashboard`): cookies made by this
# process only, so they survive reloads but not a restart.
_PROCESS_SECRET = secrets.token_hex(32)


@dataclass(frozen=True)
class Grant:
    """What a sign-in opens: tenants (None = all), how it was made, until when (epoch seconds)."""

    kind: str  # TENANT | PASSWORD | ADMIN_KEY
    tenants: list[str] | None
    fingerprint: str  # HMAC of the credential's SHA-256 digest under the server secret: never the credential
    expires: float
    nonce: str = ""


def server_secret() -> str:
    """The cookie-signing secret: VITRINE_DASHBOARD_SECRET, else this process's random one."""
    return data.raw_settings().dashboard_secret.get_secret_value() or _PROCESS_SECRET


def password_digest(password: str) -> str:
    """SHA-256 hex digest of the dashboard password (what the CLI hands to the app)."""
    return hashlib.sha256(password.encode()).hexdigest()


def fingerprint(secret: str, digest: str) -> str:
    """A credential's fingerprint for a cookie: HMAC-SHA256 of its stored digest; useless without the secret."""
    return hmac.new(secret.encode(), f"credential:{digest}".encode(), hashlib.sha256).hexdigest()[:32]


def _serializer(secret: str, purpose: str) -> URLSafeSerializer:
    return URLSafeSerializer(
        secret, salt=f"vitrine-dashboard-{purpose}", signer_kwargs={"digest_method": hashlib.sha256}
    )


def issue(grant: Grant, secret: str, purpose: str) -> str:
    """The grant as a signed token for `purpose` ('session' for the cookie, 'ticket' for the exchange)."""
    return _serializer(secret, purpose).dumps(asdict(grant))


def verify(token: str, secret: str, purpose: str, now: float | None = None) -> Grant | None:
    """The grant of a token made by `issue` for this purpose, unexpired; None when forged, tampered or expired."""
    try:
        grant = Grant(**_serializer(secret, purpose).loads(token))
    except (BadData, TypeError, ValueError, json.JSONDecodeError):
        return None
    if grant.kind not in (TENANT, PASSWORD, ADMIN_KEY) or grant.expires <= (time.time() if now is None else now):
        return None
    return grant


class TicketBook:
    """Nonces already spent, until their grants expire anyway: a ticket gives one cookie, a sign-out ends one."""

    def __init__(self) -> None:
        self._used: dict[str, float] = {}
        self._lock = threading.Lock()

    def seen(self, grant: Grant) -> bool:
        """True when this grant's nonce was spent (a ticket exchanged, a session signed out)."""
        with self._lock:
            return grant.nonce in self._used

    def spend(self, grant: Grant, now: float | None = None) -> bool:
        """True the first time a ticket's nonce is seen."""
        now = time.time() if now is None else now
        with self._lock:
            self._used = {n: exp for n, exp in self._used.items() if exp > now}
            if not grant.nonce or grant.nonce in self._used:
                return False
            self._used[grant.nonce] = grant.expires
            return True


def check_credential(database_url: str, secret: str, admin_key: str) -> Grant | None:
    """The grant a credential gives (tenants, kind, fingerprint; not yet dated), or None when refused."""
    if not secret:
        return None
    server = server_secret()
    digest = os.environ.get(PASSWORD_DIGEST_ENV, "")
    if digest and hmac.compare_digest(password_digest(secret), digest):
        return Grant(PASSWORD, None, fingerprint(server, digest), 0.0)
    if admin_key and hmac.compare_digest(secret.encode(), admin_key.encode()):
        return Grant(ADMIN_KEY, None, fingerprint(server, password_digest(admin_key)), 0.0)
    tenant = data.tenant_for_admin_key(database_url, secret)
    if tenant is None:
        return None
    return Grant(TENANT, [tenant], fingerprint(server, password_digest(secret)), 0.0)


def still_valid(database_url: str, grant: Grant, admin_key: str) -> bool:
    """Whether the credential a cookie was made with still works (rotated keys in their grace period do)."""
    server = server_secret()
    if grant.kind == PASSWORD:
        digest = os.environ.get(PASSWORD_DIGEST_ENV, "")
        return bool(digest) and hmac.compare_digest(fingerprint(server, digest), grant.fingerprint)
    if grant.kind == ADMIN_KEY:
        return bool(admin_key) and hmac.compare_digest(
            fingerprint(server, password_digest(admin_key)), grant.fingerprint
        )
    tenant = (grant.tenants or [None])[0]
    return tenant is not None and any(
        hmac.compare_digest(fingerprint(server, d), grant.fingerprint)
        for d in data.admin_key_digests(database_url, tenant)
    )


# Per server process: exchanged tickets (server.py) and signed-out sessions. A restart forgets the sign-outs;
# the cookie itself was deleted by the browser then, and a copy expires with VITRINE_DASHBOARD_SESSION_S.
SPENT_TICKETS = TicketBook()
SIGNED_OUT = TicketBook()


# --- throttling ------------------------------------------------------------------------------------


@st.cache_resource(show_spinner=False)
def _limiter(database_url: str, limit: str) -> MovingWindowRateLimiter:
    # One counter store per server process (and per database, so two apps or tests never share counts).
    return MovingWindowRateLimiter(MemoryStorage())


def client_id() -> str:
    """Who an attempt is counted against: the connection's IP address ('local' on loopback)."""
    ip = st.context.ip_address
    return ip if isinstance(ip, str) and ip else "local"  # None on loopback (and no client under AppTest)


def attempt_allowed(database_url: str, limit: str, client: str) -> float | None:
    """Count one sign-in attempt; None when allowed, else the seconds until the client may try again."""
    if not limit:
        return None
    limiter = _limiter(database_url, limit)
    for item in parse_many(limit):
        if not limiter.hit(item, "dashboard-sign-in", client):
            reset, _ = limiter.get_window_stats(item, "dashboard-sign-in", client)
            return max(reset - time.time(), 1.0)
    return None


# --- the browser session ---------------------------------------------------------------------------


def request_cookie() -> str | None:
    """The session cookie the browser sent when this session opened (the process edge; tests replace it)."""
    return st.context.cookies.get(COOKIE)


def signed_in(database_url: str, admin_key: str) -> bool:
    """True once a credential was accepted in this browser session, or a valid cookie says so."""
    if ALLOWED_KEY in st.session_state:
        return True
    token = None if st.session_state.get(SIGNED_OUT_KEY) else request_cookie()
    if not token:
        return False
    grant = verify(token, server_secret(), "session")
    if grant is None or SIGNED_OUT.seen(grant):
        log.info("dashboard sign-in cookie refused: bad signature, expired or signed out")
        return False
    if not still_valid(database_url, grant, admin_key):
        log.info("dashboard sign-in cookie refused: its %s credential was rotated or revoked", grant.kind)
        return False
    st.session_state[ALLOWED_KEY] = grant.tenants
    st.session_state[GRANT_KEY] = grant
    return True


def _post(path: str, body: str = "") -> None:
    """POST to one of our routes from the page itself (same origin), so its Set-Cookie reaches the browser."""
    base = (st.get_option("server.baseUrlPath") or "").strip("/")
    url = json.dumps((f"/{base}" if base else "") + path)
    # json.dumps of an ASCII token and a fixed path: nothing from outside is written into the script.
    st.html(
        f"<script>fetch({url}, {{method: 'POST', credentials: 'same-origin', "
        f"headers: {{'Content-Type': 'text/plain'}}, body: {json.dumps(body)}}});</script>",
        unsafe_allow_javascript=True,
        width=1,
    )


def persist() -> None:
    """After a sign-in: have the browser exchange its ticket for the cookie (once)."""
    ticket = st.session_state.pop(TICKET_KEY, None)
    if ticket:
        _post(SESSION_PATH, ticket)


def sign_in_form(database_url: str, admin_key: str, limit: str) -> None:
    """The sign-in form; on success stores the grant and a cookie ticket, and reruns."""
    if st.session_state.pop(SIGN_OUT_KEY, False):
        _post(SIGN_OUT_PATH)
    st.title("vitrine dashboards")
    st.write(
        "Sign in with your tenant's **admin key** (shown once by `vitrine tenant create`), "
        "or with the operator password given to `vitrine dashboard`."
    )
    with st.form("sign-in"):
        secret = st.text_input("Admin key or dashboard password", type="password")
        submitted = st.form_submit_button("Sign in")
    if not submitted:
        return
    client = client_id()
    wait = attempt_allowed(database_url, limit, client)
    if wait is not None:
        log.warning("dashboard sign-in throttled for client %s", client)
        st.error(f"Too many sign-in attempts from this address: try again in {wait:.0f} s.")
        return
    grant = check_credential(database_url, secret.strip(), admin_key)
    if grant is None:
        log.info("dashboard sign-in refused for client %s", client)
        st.error("That key or password is not valid.")
        return
    settings = data.raw_settings()
    now = time.time()
    session = Grant(
        grant.kind, grant.tenants, grant.fingerprint, now + settings.dashboard_session_s, secrets.token_hex(16)
    )
    # the ticket carries the session's nonce and expiry: the exchange signs the same grant for the cookie
    ticket = Grant(grant.kind, grant.tenants, grant.fingerprint, now + TICKET_S, session.nonce)
    st.session_state[ALLOWED_KEY] = session.tenants
    st.session_state[GRANT_KEY] = session
    st.session_state[TICKET_KEY] = issue(ticket, server_secret(), "ticket")
    st.session_state.pop(SIGNED_OUT_KEY, None)
    st.rerun()


def may_manage(tenant: str) -> bool:
    """Whether this browser session is signed in with a credential that administers `tenant`."""
    if ALLOWED_KEY not in st.session_state:
        return False
    allowed = st.session_state[ALLOWED_KEY]
    return allowed is None or tenant in allowed


def tenant_picker(database_url: str) -> str | None:
    """Sidebar tenant choice among the allowed ones (`?tenant=` in a deep link picks it); stores it for the pages."""
    allowed = st.session_state.get(ALLOWED_KEY)
    choices = allowed if allowed is not None else data.tenant_ids(database_url)
    if not choices:
        st.session_state.pop(TENANT_KEY, None)
        return None
    current = st.session_state.get(TENANT_KEY) or st.query_params.get("tenant")
    index = choices.index(current) if current in choices else 0
    tenant = st.sidebar.selectbox("Tenant", choices, index=index, disabled=len(choices) == 1)
    st.session_state[TENANT_KEY] = tenant
    if st.sidebar.button("Sign out"):
        grant = st.session_state.get(GRANT_KEY)
        if grant is not None:
            SIGNED_OUT.spend(grant)  # copies of its cookie stop working in this server process too
        for key in (ALLOWED_KEY, TENANT_KEY, GRANT_KEY, TICKET_KEY):
            st.session_state.pop(key, None)
        st.session_state[SIGNED_OUT_KEY] = True
        st.session_state[SIGN_OUT_KEY] = True  # the next run (the form) asks the browser to drop the cookie
        st.rerun()
    return tenant
