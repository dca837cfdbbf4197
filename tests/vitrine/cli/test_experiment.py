"""CLI commands that need no database: experiment simulate."""

from __future__ import annotations

import json

from typer.testing import CliRunner

import vitrine.cli.experiment  # noqa: F401  registers the commands
from vitrine.cli.app import app


def test_simulate_json_names_settings_and_machine():
    out = CliRunner().invoke(
        app,
        ["experiment", "simulate", "--runs", "20", "--users", "2000", "--days", "3", "--ctr-users", "100", "--json"],
    )
    assert out.exit_code == 0, out.output
    d = json.loads(out.output)
    assert d["settings"]["runs"] == 20 and d["machine"]["cores"] >= 1
    for key in ("aa_fpr", "ab_power", "ab_power_theoretical", "peeking_fpr_naive", "peeking_fpr_sequential"):
        assert key in d


def test_simulate_rejects_bad_settings():
    out = CliRunner().invoke(app, ["experiment", "simulate", "--baseline", "0.99", "--effect", "0.5"])
    assert out.exit_code == 1
