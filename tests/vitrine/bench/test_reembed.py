"""`vitrine bench reembed`: a Postgres of its own, N stored vectors re-embedded and indexed, figures printed."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from vitrine.cli import app

pytestmark = pytest.mark.integration


def test_bench_reembed_prints_one_json_object_with_its_figures(tmp_path, monkeypatch):
    monkeypatch.setenv("VITRINE_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["bench", "reembed", "--items", "40", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["items"] == 40 and report["seconds"] > 0 and report["items_per_s"] > 0
    assert report["machine"]["usable_cpus"] >= 1 and report["settings"]["items"] == 40
