"""Tenant credentials on the real Postgres: set, rotate with a grace period, revoke, and the audit trail."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select

from db import tenants as repo
from db.models import Base, CredentialAudit, Tenant

pytestmark = pytest.mark.integration

SHOPIFY_SECRET = "4f6b1c0e9a7d2b58c3e1f0a9d8b7c6e5"  # the shape of a secret Shopify shows (32 hex)


@pytest.fixture
def s(sessions):
    with sessions() as session:
        yield session


def test_the_migration_creates_what_the_models_declare(db_engine):
    with db_engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert [d for d in diffs if "credential_audit" in repr(d) or "previous_keys" in repr(d)] == []


def test_shopify_secret_is_set_and_the_old_one_works_until_the_grace_period_ends(s):
    creds = repo.create_tenant(s, "Acme", "acme", actor="test")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    change = repo.set_webhook_secret(s, "acme", SHOPIFY_SECRET, grace_s=3600, actor="cli:ops@host", now=t0)
    s.commit()
    tenant = s.get(Tenant, "acme")
    assert change.previous_valid_until == t0 + timedelta(hours=1) and change.secret is None
    assert repo.active_webhook_secrets(tenant, now=t0 + timedelta(minutes=59)) == [SHOPIFY_SECRET, creds.webhook_secret]
    assert repo.active_webhook_secrets(tenant, now=t0 + timedelta(minutes=61)) == [SHOPIFY_SECRET]
    repo.revoke(s, "acme", "webhook_secret", actor="cli:ops@host", previous_only=True)  # end the grace early
    assert repo.active_webhook_secrets(s.get(Tenant, "acme"), now=t0) == [SHOPIFY_SECRET]


@pytest.mark.parametrize("bad", ["short", "has a space in it, long enough", "x" * 513, "é" * 20])
def test_a_malformed_secret_is_refused_without_being_repeated(s, bad):
    repo.create_tenant(s, "Acme", "acme")
    with pytest.raises(repo.CredentialError, match="16 to 512 printable ASCII") as info:
        repo.set_webhook_secret(s, "acme", bad, grace_s=0, actor="t")
    assert bad not in str(info.value)
    with pytest.raises(repo.CredentialError, match="unknown tenant 'nobody'"):
        repo.set_webhook_secret(s, "nobody", SHOPIFY_SECRET, grace_s=0, actor="t")
    with pytest.raises(repo.CredentialError, match="grace period must be 0 to 2592000"):
        repo.set_webhook_secret(s, "acme", SHOPIFY_SECRET, grace_s=2592001, actor="t")


@pytest.mark.parametrize("kind", ["storefront_key", "admin_key"])
def test_a_rotated_key_works_until_its_grace_ends_and_a_revoked_one_stops_at_once(s, kind):
    creds = repo.create_tenant(s, "Acme", "acme")
    repo.create_tenant(s, "Globex", "globex")
    find = repo.tenant_by_storefront_key if kind == "storefront_key" else repo.tenant_by_admin_key
    old = getattr(creds, kind)
    t0 = datetime.now(UTC)
    rotated = repo.rotate(s, "acme", kind, grace_s=600, actor="t", now=t0)
    s.commit()
    assert rotated.secret.startswith("vsk_acme_" if kind == "storefront_key" else "vak_acme_")
    assert find(s, rotated.secret).id == "acme" and find(s, old).id == "acme"
    assert find(s, old, now=t0 + timedelta(seconds=601)) is None  # grace over
    other = repo.tenant_by_storefront_key if kind == "admin_key" else repo.tenant_by_admin_key
    assert other(s, old) is None  # a previous storefront key is never an admin key, nor the reverse
    revoked = repo.revoke(s, "acme", kind, actor="t")
    s.commit()
    assert find(s, old) is None and find(s, rotated.secret) is None and find(s, revoked.secret).id == "acme"


def test_every_change_is_audited_with_a_fingerprint_and_never_the_secret(s):
    creds = repo.create_tenant(s, "Acme", "acme", actor="cli:alice@host")
    repo.set_webhook_secret(s, "acme", SHOPIFY_SECRET, grace_s=60, actor="api:admin-key:abc")
    rotated = repo.rotate(s, "acme", "storefront_key", grace_s=0, actor="cli:bob@host")
    s.commit()
    rows = repo.audit_log(s, "acme")
    assert [(r.credential, r.action, r.actor) for r in rows[:2]] == [
        ("storefront_key", "rotate", "cli:bob@host"),
        ("webhook_secret", "set", "api:admin-key:abc"),
    ]
    assert {(r.credential, r.action) for r in rows[2:]} == {
        ("storefront_key", "create"),
        ("admin_key", "create"),
        ("webhook_secret", "create"),
    }
    assert rows[0].fingerprint == repo.fingerprint(rotated.secret) and rows[0].previous_valid_until is None
    assert rows[1].fingerprint == repo.fingerprint(SHOPIFY_SECRET) and rows[1].previous_valid_until is not None
    dumped = repr([{c.name: getattr(r, c.name) for c in CredentialAudit.__table__.columns} for r in rows])
    for secret in (SHOPIFY_SECRET, rotated.secret, creds.storefront_key, creds.admin_key, creds.webhook_secret):
        assert secret not in dumped
    assert repo.audit_log(s, "globex") == [] and len(s.scalars(select(CredentialAudit)).all()) == 5
