"""Sign-in: a tenant admin key (that tenant only), or the operator's password / global admin key (all tenants)."""

from __future__ import annotations

import hashlib
import hmac
import os

import streamlit as st

from dashboards import data
from dashboards.ui import TENANT_KEY

# Set by `vitrine dashboard`: only a digest crosses the process boundary, never the password itself.
PASSWORD_DIGEST_ENV = "VITRINE_DASHBOARD_PASSWORD_SHA256"
ALLOWED_KEY = "allowed_tenants"  # list of tenant ids, or None for every tenant


def password_digest(password: str) -> str:
    """SHA-256 hex digest of the dashboard password (what the CLI hands to the app)."""
    return hashlib.sha256(password.encode()).hexdigest()


def check_credential(database_url: str, secret: str, admin_key: str) -> list[str] | None | bool:
    """Tenants the secret opens: a list (one tenant), None (all tenants) or False (refused)."""
    if not secret:
        return False
    digest = os.environ.get(PASSWORD_DIGEST_ENV, "")
    if digest and hmac.compare_digest(password_digest(secret), digest):
        return None
    if admin_key and hmac.compare_digest(secret.encode(), admin_key.encode()):
        return None
    tenant = data.tenant_for_admin_key(database_url, secret)
    return [tenant] if tenant else False


def signed_in() -> bool:
    """True once a credential was accepted in this browser session."""
    return ALLOWED_KEY in st.session_state


def sign_in_form(database_url: str, admin_key: str) -> None:
    """The sign-in form; on success stores the allowed tenants and reruns."""
    st.title("vitrine dashboards")
    st.write(
        "Sign in with your tenant's **admin key** (shown once by `vitrine tenant create`), "
        "or with the operator password given to `vitrine dashboard`."
    )
    with st.form("sign-in"):
        secret = st.text_input("Admin key or dashboard password", type="password")
        submitted = st.form_submit_button("Sign in")
    if submitted:
        allowed = check_credential(database_url, secret.strip(), admin_key)
        if allowed is False:
            st.error("That key or password is not valid.")
            return
        st.session_state[ALLOWED_KEY] = allowed
        st.rerun()


def tenant_picker(database_url: str) -> str | None:
    """Sidebar tenant choice among the allowed ones; stores it for the pages."""
    allowed = st.session_state.get(ALLOWED_KEY)
    choices = allowed if allowed is not None else data.tenant_ids(database_url)
    if not choices:
        st.session_state.pop(TENANT_KEY, None)
        return None
    current = st.session_state.get(TENANT_KEY)
    index = choices.index(current) if current in choices else 0
    tenant = st.sidebar.selectbox("Tenant", choices, index=index, disabled=len(choices) == 1)
    st.session_state[TENANT_KEY] = tenant
    if st.sidebar.button("Sign out"):
        for key in (ALLOWED_KEY, TENANT_KEY):
            st.session_state.pop(key, None)
        st.rerun()
    return tenant
