"""`vitrine tenant set-secret|rotate|revoke|audit`, in-process, on the real Postgres."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from db.models import Tenant
from db.tenants import active_webhook_secrets, create_tenant, tenant_by_storefront_key
from tests.helpers import settings_env
from vitrine.cli import app

pytestmark = pytest.mark.integration

runner = CliRunner()
SHOPIFY_SECRET = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"  # the shape of a secret Shopify shows


@pytest.fixture
def acme(settings, sessions, monkeypatch):
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)
    with sessions.begin() as session:
        return create_tenant(session, "Acme", "acme")


def test_set_secret_reads_stdin_and_the_audit_never_shows_it(acme, sessions):
    r = runner.invoke(
        app, ["tenant", "set-secret", "acme", "--secret-stdin", "--grace", "1h"], input=SHOPIFY_SECRET + "\n"
    )
    assert r.exit_code == 0, r.output
    assert SHOPIFY_SECRET not in r.output and "previous one works until" in r.output
    with sessions() as s:
        assert active_webhook_secrets(s.get(Tenant, "acme")) == [SHOPIFY_SECRET, acme.webhook_secret]
    audit = runner.invoke(app, ["tenant", "audit", "--tenant", "acme", "--json"])
    changes = json.loads(audit.stdout)["changes"]
    assert (changes[0]["credential"], changes[0]["action"]) == ("webhook_secret", "set")
    assert changes[0]["actor"].startswith("cli:") and len(changes) == 4
    for secret in (SHOPIFY_SECRET, acme.webhook_secret, acme.storefront_key, acme.admin_key):
        assert secret not in audit.stdout
    # A secret is never an argument (argv shows in `ps`): there is no such option to pass it by.
    argv = runner.invoke(app, ["tenant", "set-secret", "acme", "--secret", SHOPIFY_SECRET])
    assert argv.exit_code == 2 and "No such option" in argv.output


def test_rotate_prints_the_new_key_once_and_revoke_stops_it_at_once(acme, sessions):
    r = runner.invoke(app, ["tenant", "rotate", "acme", "storefront_key", "--grace", "10m", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["secret"].startswith("vsk_acme_") and doc["previous_valid_until"] is not None
    with sessions() as s:
        assert tenant_by_storefront_key(s, acme.storefront_key).id == "acme"  # in grace
    revoked = runner.invoke(app, ["tenant", "revoke", "acme", "storefront_key"])
    assert revoked.exit_code == 0 and "previous one stopped working now" in revoked.output
    with sessions() as s:
        assert tenant_by_storefront_key(s, acme.storefront_key) is None
        assert tenant_by_storefront_key(s, doc["secret"]) is None


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["set-secret", "acme", "--secret-stdin"], "short\n", "16 to 512 printable ASCII"),
        (["set-secret", "nobody", "--secret-stdin"], SHOPIFY_SECRET + "\n", "unknown tenant 'nobody'"),
        (["rotate", "acme", "password"], None, "unknown credential 'password'"),
        (["rotate", "acme", "admin_key", "--grace", "31d"], None, "grace period must be 0 to 2592000"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(acme, sessions, args, stdin, message):
    r = runner.invoke(app, ["tenant", *args], input=stdin)
    assert r.exit_code == 1 and message in r.output
    assert stdin is None or stdin.strip() not in r.output  # a refused secret is not repeated either
    with sessions() as s:
        assert s.get(Tenant, "acme").webhook_secret == acme.webhook_secret
    audit = json.loads(runner.invoke(app, ["tenant", "audit", "--json"]).stdout)["changes"]
    assert {c["action"] for c in audit} == {"create"}
