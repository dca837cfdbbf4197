"""`vitrine bench reembed-tower`: the local stack's worker re-embeds a tower from the images while live catalog
events are timed; one JSON object with the figures."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from vitrine.cli import app

pytestmark = pytest.mark.integration


def test_bench_reembed_tower_prints_one_json_object_with_its_figures(tmp_path, monkeypatch, models_dir):
    monkeypatch.setenv("VITRINE_DATA_DIR", str(tmp_path))
    (tmp_path / "models").symlink_to(models_dir)  # the embedder's weights and ONNX graph, as the suite has them
    monkeypatch.setenv("VITRINE_DEPLOYMENT_CACHE_TTL_S", "1")  # the sweep waits 11 s, not 20
    args = ["bench", "reembed-tower", "--products", "12", "--baseline", "2", "--interval", "0.5", "--page", "4",
            "--json"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    r = json.loads(result.stdout)
    d = r["deployment"]
    assert d["status"] == "ready" and d["items_failed"] == 0
    assert d["items_written"] >= r["catalog"]["items"] >= 12 and d["items_per_s"] > 0
    assert r["live_alone"]["events"] >= 3 and r["live_until_ready"]["events"] >= 1
    # Every live product, posted before or during the deployment, has the tower's vector.
    assert r["live_products_with_tower_vectors"] == r["live_alone"]["events"] + r["live_until_ready"]["events"]
    assert r["settings"]["image_page"] == 4 and r["machine"]["usable_cpus"] >= 1
