"""Every command that prints data takes --json: an audit of the whole CLI, and the commands that gained it, run."""

from __future__ import annotations

import json

import click
import pytest
import typer
from typer.testing import CliRunner

from tests.helpers import settings_env
from vitrine.cli import app

runner = CliRunner()
# Long-running services and the schema migration print logs, not data.
NO_DATA = {"up", "worker", "api", "demo", "dashboard", "db upgrade"}


def _commands(group, ctx: click.Context, prefix: tuple[str, ...] = ()):
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if hasattr(command, "list_commands"):  # a group (typer's own class in some versions)
            yield from _commands(command, click.Context(command, parent=ctx), (*prefix, name))
        else:
            yield " ".join((*prefix, name)), command


def test_every_command_that_prints_data_takes_json():
    root = typer.main.get_command(app)
    missing = [
        name
        for name, command in _commands(root, click.Context(root))
        if name not in NO_DATA and not any("--json" in getattr(p, "opts", []) for p in command.params)
    ]
    assert missing == []


@pytest.mark.integration
def test_tenant_create_and_the_experiment_commands_print_json(settings, monkeypatch):
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)
    created = runner.invoke(app, ["tenant", "create", "Acme", "--json"])
    assert created.exit_code == 0, created.output
    creds = json.loads(created.stdout)
    assert creds["tenant"] == "acme" and creds["storefront_key"] and creds["admin_key"] and creds["webhook_secret"]

    made = runner.invoke(app, ["experiment", "create", "e1", "--tenant", "acme", "--json"])
    assert made.exit_code == 0, made.output
    exp = json.loads(made.stdout)
    assert (exp["key"], exp["status"], exp["primary_metric"]) == ("e1", "draft", "ctr")
    assert [a["name"] for a in exp["arms"]] == ["baseline", "visual"] and exp["created_at"]
    started = json.loads(runner.invoke(app, ["experiment", "start", "e1", "--tenant", "acme", "--json"]).stdout)
    assert started["status"] == "running" and started["started_at"]
    refreshed = runner.invoke(app, ["experiment", "refresh", "--tenant", "acme", "--json"])
    assert refreshed.exit_code == 0, refreshed.output
    rows = json.loads(refreshed.stdout)["refreshed"]
    assert [(r["tenant"], r["experiment"]) for r in rows] == [("acme", "e1")]
    stopped = json.loads(runner.invoke(app, ["experiment", "stop", "e1", "--tenant", "acme", "--json"]).stdout)
    assert stopped["status"] == "stopped" and stopped["stopped_at"]


@pytest.mark.integration
def test_catalog_replay_json_with_nothing_dead_lettered(settings, monkeypatch):
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)
    result = runner.invoke(app, ["catalog", "replay", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"replayed": {}, "not_found": [], "not_replayed": {}}
