"""`vitrine experiment create|start|stop|list` on the real Postgres."""

import json

import pytest
from typer.testing import CliRunner

from db.tenants import create_tenant
from tests.helpers import settings_env
from vitrine.cli import app

pytestmark = pytest.mark.integration
runner = CliRunner()


def test_experiment_lifecycle_from_the_cli(settings, sessions, monkeypatch):
    for k, v in settings_env(settings).items():
        monkeypatch.setenv(k, v)
    with sessions.begin() as s:
        create_tenant(s, "Acme", "acme")
    bad = runner.invoke(app, ["experiment", "create", "e1", "-t", "acme", "--arms", "baseline=0.6,visual=0.6"])
    assert bad.exit_code == 1 and "sum" in bad.output
    unknown = runner.invoke(app, ["experiment", "create", "e1", "-t", "acme", "--arms", "baseline=0.5,magic=0.5"])
    assert (
        unknown.exit_code == 1 and "arm 'magic' is not `baseline`, `visual` or `visual@<model key>`" in unknown.output
    )
    not_deployed = runner.invoke(
        app, ["experiment", "create", "e1", "-t", "acme", "--arms", "baseline=0.5,visual@nope@000000000000=0.5"]
    )
    assert not_deployed.exit_code == 1 and "model 'nope@000000000000' is not deployed" in not_deployed.output
    nosuch = runner.invoke(app, ["experiment", "create", "e1", "-t", "acme", "--guardrail", "nosuch_metric"])
    assert nosuch.exit_code == 1 and "unknown guardrail metric 'nosuch_metric'" in nosuch.output  # issue #17
    margin = runner.invoke(app, ["experiment", "create", "e1", "-t", "acme", "--guardrail", "ctr:x"])
    assert margin.exit_code == 1 and "metric:margin" in margin.output
    ok = runner.invoke(
        app,
        ["experiment", "create", "e1", "-t", "acme", "--metric", "conversion", "--planned", "5000"]
        + ["--guardrail", "ctr", "--guardrail", "revenue_per_user:0.01"],
    )
    assert ok.exit_code == 0, ok.output
    assert runner.invoke(app, ["experiment", "start", "e1", "-t", "acme"]).output.strip() == "e1 is running"
    again = runner.invoke(app, ["experiment", "start", "e1", "-t", "acme"])
    assert again.exit_code == 1 and "only a draft can start" in again.output
    listed = json.loads(runner.invoke(app, ["experiment", "list", "-t", "acme", "--json"]).output)["experiments"]
    assert [(e["key"], e["status"], e["primary_metric"]) for e in listed] == [("e1", "running", "conversion")]
    assert listed[0]["guardrails"] == [
        {"metric": "ctr", "margin": 0.02},
        {"metric": "revenue_per_user", "margin": 0.01},
    ]
    assert runner.invoke(app, ["experiment", "stop", "e1", "-t", "acme"]).output.strip() == "e1 is stopped"
