"""`--json` on `tenant list` and `config`, `vitrine tenant cors`, and exit codes, on the real Postgres."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from db.tenants import create_tenant
from tests.helpers import settings_env
from vitrine.cli import app

pytestmark = pytest.mark.integration

runner = CliRunner()


@pytest.fixture
def env(settings, sessions, monkeypatch):
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)
    with sessions.begin() as session:
        create_tenant(session, "Acme", "acme")
    return monkeypatch


def test_tenant_cors_and_tenant_list_json(env):
    added = runner.invoke(app, ["tenant", "cors", "acme", "--add", "https://Shop.Acme.test/", "--add", "http://b.test"])
    assert added.exit_code == 0, added.output
    assert added.stdout.split() == ["http://b.test", "https://shop.acme.test"]
    removed = runner.invoke(app, ["tenant", "cors", "acme", "--remove", "http://b.test", "--json"])
    assert json.loads(removed.stdout) == {"tenant": "acme", "cors_origins": ["https://shop.acme.test"]}

    listed = json.loads(runner.invoke(app, ["tenant", "list", "--json"]).stdout)
    assert listed["count"] == 1
    row = listed["tenants"][0]
    assert row["id"] == "acme" and row["cors_origins"] == ["https://shop.acme.test"] and row["products"] == 0

    assert runner.invoke(app, ["tenant", "cors", "acme", "--add", "shop.acme.test"]).exit_code == 2  # usage
    unknown = runner.invoke(app, ["tenant", "cors", "nobody"])
    assert unknown.exit_code == 1 and "unknown tenant" in unknown.output
    cleared = runner.invoke(app, ["tenant", "cors", "acme", "--clear", "--json"])
    assert json.loads(cleared.stdout)["cors_origins"] == []


def test_config_json_lists_every_setting_with_secrets_masked(env):
    env.setenv("VITRINE_ADMIN_KEY", "s3cret-admin-key")
    result = runner.invoke(app, ["config", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["variable"]: r for r in json.loads(result.stdout)["settings"]}
    assert rows["VITRINE_RATE_LIMIT_STOREFRONT"]["value"] == "1000/second"
    assert rows["VITRINE_ADMIN_KEY"]["value"] == "(set)" and "s3cret" not in result.stdout
    assert all(r["meaning"] for r in rows.values())


def test_an_unreachable_postgres_exits_3(env):
    env.setenv("VITRINE_DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    result = runner.invoke(app, ["tenant", "cors", "acme"])
    assert result.exit_code == 3 and "unreachable" in result.output
