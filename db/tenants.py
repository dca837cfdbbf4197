"""Tenants and their credentials. Keys are random and high-entropy, so a plain SHA-256 digest
is enough to store them (no password hashing needed); only the webhook secret stays readable,
because verifying an HMAC needs it.

Every change of a credential (create, set, rotate, revoke) writes one `credential_audit` row: who,
which credential, when, a short fingerprint of the new value and the end of any grace period, never
the value. Rotation keeps the replaced credential working until its grace period ends (storefront
and admin keys in `previous_keys`, the webhook secret in `tenants.webhook_secret_previous`);
revocation stops the current one and any previous one at once and issues a fresh one.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, get_args

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from db.models import CredentialAudit, PreviousKey, Tenant

_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
Credential = Literal["storefront_key", "admin_key", "webhook_secret"]
CREDENTIALS: tuple[str, ...] = get_args(Credential)
KEYS = ("storefront_key", "admin_key")
MAX_GRACE_S = 30 * 86400  # a forgotten rotation must not leave an old key alive for ever
# A secret chosen elsewhere (Shopify's): printable ASCII without spaces; Shopify's are 32-64 characters.
_SECRET = re.compile(r"^[\x21-\x7e]{16,512}$")


class CredentialError(ValueError):
    """A credential change that cannot be made; `str()` names why and never holds a secret."""


class CredentialConflict(CredentialError):
    """The change asks for the state already in force (setting the current secret again)."""


def hash_key(key: str) -> str:
    """The SHA-256 hex digest under which a key is stored and looked up."""
    return hashlib.sha256(key.encode()).hexdigest()


def fingerprint(secret: str) -> str:
    """12 hex digits that tell credentials apart in the audit trail without revealing them."""
    return hash_key(secret)[:12]


@dataclass(frozen=True)
class TenantCredentials:
    """Shown once at creation; only digests of the keys are stored."""

    tenant_id: str
    storefront_key: str
    admin_key: str
    webhook_secret: str


@dataclass(frozen=True)
class CredentialChange:
    """The outcome of a set, rotate or revoke: `secret` is the new value when vitrine generated it (shown once)."""

    tenant_id: str
    credential: str
    action: str
    fingerprint: str
    previous_valid_until: datetime | None
    secret: str | None = None


def slugify(name: str) -> str:
    """A tenant id from a display name."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:63]


def _new(credential: str, tenant_id: str) -> str:
    if credential == "storefront_key":
        return f"vsk_{tenant_id}_{secrets.token_urlsafe(24)}"
    if credential == "admin_key":
        return f"vak_{tenant_id}_{secrets.token_urlsafe(24)}"
    return f"whsec_{secrets.token_urlsafe(32)}"


def create_tenant(
    session: Session,
    name: str,
    tenant_id: str | None = None,
    *,
    default_arm: str = "baseline",
    actor: str = "system",
) -> TenantCredentials:
    """Add a tenant with fresh keys (the caller commits); `default_arm` serves users outside experiments."""
    tid = tenant_id or slugify(name)
    if not _SLUG.match(tid):
        raise ValueError(f"invalid tenant id {tid!r}: use lowercase letters, digits and dashes")
    if session.get(Tenant, tid) is not None:
        raise ValueError(f"tenant {tid!r} already exists")
    creds = TenantCredentials(
        tenant_id=tid,
        storefront_key=_new("storefront_key", tid),
        admin_key=_new("admin_key", tid),
        webhook_secret=_new("webhook_secret", tid),
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
    for credential in CREDENTIALS:
        _audit(session, tid, credential, "create", actor, getattr(creds, credential), None)
    session.flush()
    return creds


def _audit(
    session: Session, tenant_id: str, credential: str, action: str, actor: str, value: str, until: datetime | None
) -> None:
    session.add(
        CredentialAudit(
            tenant_id=tenant_id,
            credential=credential,
            action=action,
            actor=actor[:200],
            fingerprint=fingerprint(value),
            previous_valid_until=until,
        )
    )


def _tenant(session: Session, tenant_id: str) -> Tenant:
    # Row lock: two rotations of one tenant at once must not both take the same "previous" value.
    tenant = session.get(Tenant, tenant_id, with_for_update=True)
    if tenant is None:
        raise CredentialError(f"unknown tenant {tenant_id!r}")
    return tenant


def _grace_end(grace_s: int, now: datetime) -> datetime | None:
    if not 0 <= grace_s <= MAX_GRACE_S:
        raise CredentialError(f"grace period must be 0 to {MAX_GRACE_S} seconds (30 days), not {grace_s}")
    return now + timedelta(seconds=grace_s) if grace_s else None


def _replace(
    session: Session,
    tenant: Tenant,
    credential: str,
    value: str,
    *,
    grace_s: int,
    action: str,
    actor: str,
    now: datetime,
) -> datetime | None:
    """Put `value` in force; the replaced one keeps working until the returned time (None: stops now)."""
    until = _grace_end(grace_s, now)
    if credential == "webhook_secret":
        if value == tenant.webhook_secret:
            raise CredentialConflict("the new webhook secret is the one already in force")
        tenant.webhook_secret_previous = tenant.webhook_secret if until else None
        tenant.webhook_secret_previous_expires_at = until
        tenant.webhook_secret = value
    else:
        column = f"{credential}_hash"
        old = getattr(tenant, column)
        # One previous key per kind: a second rotation within a grace period ends the first one's.
        session.execute(delete(PreviousKey).where(PreviousKey.tenant_id == tenant.id, PreviousKey.kind == credential))
        if until:
            session.add(PreviousKey(key_hash=old, tenant_id=tenant.id, kind=credential, expires_at=until))
        setattr(tenant, column, hash_key(value))
    _audit(session, tenant.id, credential, action, actor, value, until)
    session.flush()
    return until


def set_webhook_secret(
    session: Session, tenant_id: str, secret: str, *, grace_s: int, actor: str, now: datetime | None = None
) -> CredentialChange:
    """Put a secret chosen elsewhere (Shopify's webhook signing secret) in force; the old one works `grace_s` more."""
    if not _SECRET.match(secret):
        # The message describes the rule, never the value: a near-miss secret is still a secret.
        raise CredentialError(
            f"a webhook secret is 16 to 512 printable ASCII characters without spaces (got {len(secret)} characters)"
        )
    now = now or datetime.now(UTC)
    tenant = _tenant(session, tenant_id)
    until = _replace(session, tenant, "webhook_secret", secret, grace_s=grace_s, action="set", actor=actor, now=now)
    return CredentialChange(tenant_id, "webhook_secret", "set", fingerprint(secret), until)


def rotate(
    session: Session, tenant_id: str, credential: str, *, grace_s: int, actor: str, now: datetime | None = None
) -> CredentialChange:
    """Issue a new credential (returned once); the replaced one keeps working for `grace_s` seconds."""
    if credential not in CREDENTIALS:
        raise CredentialError(f"unknown credential {credential!r}: use one of {', '.join(CREDENTIALS)}")
    now = now or datetime.now(UTC)
    tenant = _tenant(session, tenant_id)
    value = _new(credential, tenant.id)
    until = _replace(session, tenant, credential, value, grace_s=grace_s, action="rotate", actor=actor, now=now)
    return CredentialChange(tenant.id, credential, "rotate", fingerprint(value), until, secret=value)


def revoke(
    session: Session, tenant_id: str, credential: str, *, actor: str, previous_only: bool = False
) -> CredentialChange:
    """Stop the credential and any previous one at once, issuing a new one (returned once).

    `previous_only`: end only the grace period of a rotated-out credential; the current one stays.
    """
    if credential not in CREDENTIALS:
        raise CredentialError(f"unknown credential {credential!r}: use one of {', '.join(CREDENTIALS)}")
    tenant = _tenant(session, tenant_id)
    if not previous_only:
        value = _new(credential, tenant.id)
        _replace(session, tenant, credential, value, grace_s=0, action="revoke", actor=actor, now=datetime.now(UTC))
        return CredentialChange(tenant.id, credential, "revoke", fingerprint(value), None, secret=value)
    if credential == "webhook_secret":
        tenant.webhook_secret_previous = None
        tenant.webhook_secret_previous_expires_at = None
        current = fingerprint(tenant.webhook_secret)
    else:
        session.execute(delete(PreviousKey).where(PreviousKey.tenant_id == tenant.id, PreviousKey.kind == credential))
        current = getattr(tenant, f"{credential}_hash")[:12]  # the fingerprint is the digest's start
    session.add(
        CredentialAudit(
            tenant_id=tenant.id, credential=credential, action="revoke", actor=actor[:200], fingerprint=current
        )
    )
    session.flush()
    return CredentialChange(tenant.id, credential, "revoke", current, None)


def audit_log(session: Session, tenant_id: str | None = None, *, limit: int = 100) -> list[CredentialAudit]:
    """The newest credential changes first, of one tenant or of all."""
    q = select(CredentialAudit).order_by(CredentialAudit.at.desc(), CredentialAudit.id.desc()).limit(limit)
    if tenant_id is not None:
        q = q.where(CredentialAudit.tenant_id == tenant_id)
    return list(session.scalars(q))


def _by_key(session: Session, kind: str, key: str, now: datetime | None) -> Tenant | None:
    digest = hash_key(key)
    column = Tenant.storefront_key_hash if kind == "storefront_key" else Tenant.admin_key_hash
    in_grace = select(PreviousKey.tenant_id).where(
        PreviousKey.key_hash == digest, PreviousKey.kind == kind, PreviousKey.expires_at > (now or datetime.now(UTC))
    )
    return session.scalar(select(Tenant).where(or_(column == digest, Tenant.id.in_(in_grace))))


def tenant_by_storefront_key(session: Session, key: str, now: datetime | None = None) -> Tenant | None:
    """The tenant whose current storefront key, or rotated-out key still in its grace period, is `key`."""
    return _by_key(session, "storefront_key", key, now)


def tenant_by_admin_key(session: Session, key: str, now: datetime | None = None) -> Tenant | None:
    """The tenant whose current admin key, or rotated-out key still in its grace period, is `key`."""
    return _by_key(session, "admin_key", key, now)


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
