"""`vitrine demo --exit` end to end on the real broker and Postgres, at a small scale.

A sample catalog from generated drawings (VITRINE_SAMPLE_IMAGES: the test does not depend on Debian's
openclipart) goes through the signed webhook and a real worker; a model is trained and deployed through the
admin API; an experiment with three arms runs; simulated shoppers go through the storefront API; the report
names every arm; the dashboard served the whole time. With Chromium installed, the dashboard pages are also
captured (`--screenshots`) and checked for pictures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from PIL import Image, ImageStat

from tests.helpers import settings_env
from tests.vitrine.test_demo_catalog import write_drawings
from vitrine.screenshots import BrowserMissing, browser_paths

pytestmark = pytest.mark.integration

TOPICS = {  # 8 of openclipart's topic folders the demo maps to shop categories, one hue each
    "food/fruit": 0.0,
    "people/clothing": 0.12,
    "recreation/toys": 0.25,
    "food/beverages": 0.37,
    "food/desserts": 0.5,
    "plants/flowers": 0.62,
    "animals/mammals": 0.75,
    "recreation/music": 0.87,
}


def _chromium() -> bool:
    try:
        browser_paths()
    except BrowserMissing:
        return False
    return True


def test_demo_runs_the_whole_product_and_reports_three_arms(settings, tmp_path):
    source = write_drawings(tmp_path / "drawings", TOPICS, per_topic=14, side=300)
    shots = tmp_path / "shots"
    env = {
        **settings_env(settings),
        "VITRINE_SAMPLE_IMAGES": str(source),
        "VITRINE_DEPLOYMENT_CACHE_TTL_S": "1",
        "VITRINE_LOOKUP_CACHE_TTL_S": "0",
    }
    args = ["--products", "48", "--users", "40", "--rate", "60", "--exit", "--dashboard-port", "0"]
    if _chromium():
        args += ["--screenshots", str(shots)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "vitrine", "demo", *args],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        proc.terminate()  # SIGTERM: the demo stops its api, worker and dashboard before it exits
        stdout, stderr = proc.communicate(timeout=60)
        pytest.fail(f"the demo took over 600 s:\n{stdout[-3000:]}\n{stderr[-3000:]}")
    run = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    out = run.stdout
    assert run.returncode == 0, f"demo failed:\n{out[-4000:]}\n{run.stderr[-4000:]}"
    assert "sample catalog: 48 products in 8 categories" in out
    assert "posted 48 signed product events" in out
    summary = json.loads((settings.data_dir / "demo" / "summary.json").read_text())
    baseline, pretrained, trained = summary["arms"]
    assert baseline == "baseline" and pretrained.startswith("visual@efficientnet-lite0")
    assert trained == f"visual@{summary['model']['key']}" and summary["model"]["key"].startswith("triplet-head@")
    # the report (printed, and as figures) has every arm, each with simulated shoppers in it
    report = out[out.index("SIMULATED SHOPPERS") :]
    assert all(arm in report for arm in summary["arms"])
    assert {a["name"] for a in summary["report"]["arms"]} == set(summary["arms"])
    shoppers = summary["shoppers"]
    assert shoppers["users"] == 40 and shoppers["requests"] > 40 and shoppers["errors"] == 0
    assert set(shoppers["by_arm"]) == set(summary["arms"])
    # what each arm showed, against the catalog's ground truth: the storefront asked for the viewed product's
    # category (the demo's default), so every arm stayed in it
    shown = {row["arm"]: row for row in summary["shown"]}
    assert set(shown) == set(summary["arms"]) and all(row["same_category"] > 0.99 for row in shown.values())
    assert "what each arm showed" in out
    assert "open the dashboard: http://127.0.0.1:" in out
    assert {"ingest (webhook -> indexed)", "train a catalog-adapted model", "simulated shoppers"} <= set(
        summary["phases"]
    )
    # the dashboard password never reaches the console
    password = (settings.data_dir / "demo" / "dashboard-password").read_text().strip()
    assert password not in out and password not in run.stderr
    if _chromium():
        pages = {shot["page"]: shot for shot in summary["screenshots"]}
        assert set(pages) == {"catalog", "latent-map", "experiment"}
        assert pages["catalog"]["images"] >= 3  # the product's thumbnails and its neighbours'
        for shot in pages.values():
            assert not shot["bad_words"] and not shot["overflow_x"], shot
            with Image.open(shot["path"]) as im:
                low, high = ImageStat.Stat(im.convert("L")).extrema[0]
                assert high - low > 50  # not a blank page
