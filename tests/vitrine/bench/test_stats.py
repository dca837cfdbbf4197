"""`vitrine bench stats` end to end on the test database: generated events, the rollup path, the JSON figures."""

import json

from typer.testing import CliRunner

import vitrine.cli.bench  # noqa: F401  registers the commands
from vitrine.cli.app import app


def test_bench_stats_runs_on_a_small_size(db_engine, monkeypatch, tmp_path):
    monkeypatch.setenv("VITRINE_DATABASE_URL", db_engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("VITRINE_DATA_DIR", str(tmp_path))
    out = CliRunner().invoke(app, ["bench", "stats", "--events", "2000", "--json"])
    assert out.exit_code == 0, out.output
    row = json.loads(out.output)["results"][0]
    # 1,000 requests over 100 users (u = request * 7919 mod 100): every user is exposed.
    assert row["events"] == 2000 and row["users"] == 100 and row["generate_s"] is not None
    assert row["source"] == "rollup"  # the triggers kept the rollup current during generation
    again = CliRunner().invoke(app, ["bench", "stats", "--events", "2000", "--json", "--no-daily", "--source", "raw"])
    again_row = json.loads(again.output)["results"][0]
    assert again_row["generate_s"] is None and again_row["source"] == "raw"  # data reused, raw path
    assert again_row["users"] == 100
    assert row["load_s"] > 0 and row["analysis_s"] > 0 and row["daily_s"] is not None
    assert json.loads(out.output)["machine"]["cores"] >= 1
