"""`vitrine bench reembed`: a Postgres of its own, N stored vectors re-embedded and indexed, figures printed."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from vitrine.cli import app

pytestmark = pytest.mark.integration


def test_bench_reembed_prints_one_json_object_with_its_figures(tmp_path, monkeypatch):
    monkeypatch.setenv("VITRINE_DATA_DIR", str(tmp_path))
    args = ["bench", "reembed", "--items", "40", "--shoppers", "2", "--think", "0.05", "--baseline", "1", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["items"] == 40 and report["status"] == "ready" and report["seconds"] > 0
    assert report["serving_alone"]["requests"] > 0 and "p99_ms" in report["serving_during"]
    assert report["machine"]["usable_cpus"] >= 1 and report["settings"]["items"] == 40
