"""Tenants and their credentials. Keys are random and high-entropy, so a plain SHA-256 digest
is enough to store them (no password hashing needed); only the webhook secret stays readable,
because verifying an HMAC needs it."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import Tenant

_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class TenantCredentials:
    """Shown once at creation; only digests of the keys are stored."""

    tenant_id: str
    storefront_key: str
    admin_key: str
    webhook_secret: str


def slugify(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:63]


def create_tenant(
    session: Session, name: str, tenant_id: str | None = None, *, default_arm: str = "baseline"
) -> TenantCredentials:
    """Add a tenant with fresh keys (the caller commits); `default_arm` serves users outside experiments."""
    tid = tenant_id or slugify(name)
    if not _SLUG.match(tid):
        raise ValueError(f"invalid tenant id {tid!r}: use lowercase letters, digits and dashes")
    if session.get(Tenant, tid) is not None:
        raise ValueError(f"tenant {tid!r} already exists")
    creds = TenantCredentials(
        tenant_id=tid,
        storefront_key=f"vsk_{tid}_{secrets.token_urlsafe(24)}",
        admin_key=f"vak_{tid}_{secrets.token_urlsafe(24)}",
        webhook_secret=f"whsec_{secrets.token_urlsafe(32)}",
    )
    session.add(
        Tenant(
            id=tid,
            name=name,
            storefront_key_hash=hash_key(creds.storefront_key),
            admin_key_hash=hash_key(creds.admin_key),
            webhook_secret=creds.webhook_secret,
            default_arm=default_arm,
        )
    )
    session.flush()
    return creds


def tenant_by_storefront_key(session: Session, key: str) -> Tenant | None:
    return session.scalar(select(Tenant).where(Tenant.storefront_key_hash == hash_key(key)))


def active_webhook_secrets(tenant: Tenant, now: datetime | None = None) -> list[str]:
    """The current secret, plus the previous one while its rotation grace period lasts."""
    now = now or datetime.now(UTC)
    out = [tenant.webhook_secret]
    if (
        tenant.webhook_secret_previous
        and tenant.webhook_secret_previous_expires_at
        and tenant.webhook_secret_previous_expires_at > now
    ):
        out.append(tenant.webhook_secret_previous)
    return out


def tenant_by_admin_key(session: Session, key: str) -> Tenant | None:
    return session.scalar(select(Tenant).where(Tenant.admin_key_hash == hash_key(key)))
