"""The vision commands end to end through Typer, on the session's model cache."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import vitrine.cli.bench  # noqa: F401  registers the commands (bench vision; it imports the vision commands too)
from vitrine.cli.app import app

runner = CliRunner()


@pytest.fixture()
def env(monkeypatch, data_dir):
    monkeypatch.setenv("VITRINE_DATA_DIR", str(data_dir))
    for key in ("VITRINE_EMBEDDER", "VITRINE_DETECTOR", "VITRINE_YOLO_WEIGHTS", "VITRINE_USE_ONNX"):
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


@pytest.fixture()
def files(tmp_path):
    shot = Image.new("RGB", (300, 200), "white")
    shot.paste((200, 30, 30), (100, 50, 200, 150))
    buf = io.BytesIO()
    shot.save(buf, "PNG")
    (tmp_path / "shot.png").write_bytes(buf.getvalue())
    (tmp_path / "notes.jpg").write_text("not a photo")
    return tmp_path


def _json(result) -> dict:
    assert result.stdout.lstrip().startswith("{"), result.stdout[:200]
    return json.loads(result.stdout)


def test_models_loads_the_default_offline(env):
    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    roles = {m["role"]: m for m in _json(result)["models"]}
    assert roles["embedder"]["loads"] and roles["embedder"]["model_key"].startswith("efficientnet-lite0@")
    assert roles["detector"]["name"] == "whole-image" and roles["detector"]["loads"]


def test_models_reports_missing_yolo_weights(env, tmp_path):
    env.setenv("VITRINE_DETECTOR", "yolo")
    env.setenv("VITRINE_YOLO_WEIGHTS", str(tmp_path / "missing.pt"))
    result = runner.invoke(app, ["models", "--no-load"])
    assert result.exit_code == 0 and "not loaded" in result.stdout
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 1 and "missing.pt" in result.stdout


def test_detect_trims_saves_and_reports_bad_files(env, files, tmp_path):
    out = tmp_path / "annotated"
    result = runner.invoke(
        app, ["detect", str(files / "shot.png"), str(files / "notes.jpg"), "--save-annotated", str(out), "--json"]
    )
    assert result.exit_code == 1  # one file was not an image
    shot, notes = _json(result)["images"]
    x0, y0, x1, y1 = shot["items"][0]["box"]
    assert shot["items"][0]["kind"] == "whole" and 90 <= x0 <= 100 and 200 <= x1 <= 210
    assert Image.open(shot["annotated"]).size == (300, 200)
    assert notes["error"].startswith("not_an_image")


def test_embed_prints_unit_vectors(env, files):
    result = runner.invoke(app, ["embed", str(files / "shot.png"), "--json"])
    assert result.exit_code == 0, result.output
    report = _json(result)
    (item,) = report["images"][0]["items"]
    assert report["dim"] == len(item["vector"]) == 1280
    assert np.linalg.norm(item["vector"]) == pytest.approx(1.0, abs=1e-4)
    text = runner.invoke(app, ["embed", str(files / "shot.png"), "--text", "red box"])
    assert text.exit_code == 1 and "images only" in text.stderr


def test_eval_retrieval_on_an_image_folder(env, tmp_path):
    rng = np.random.default_rng(0)
    for label, colour in (("red", (220, 30, 30)), ("blue", (30, 30, 220)), ("green", (30, 200, 30))):
        (tmp_path / "ds" / label).mkdir(parents=True)
        for i in range(6):
            noise = rng.integers(-40, 40, size=(48, 48, 3))
            arr = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(tmp_path / "ds" / label / f"{i}.png")
    result = runner.invoke(app, ["eval", "retrieval", "--dataset", str(tmp_path / "ds"), "--sample", "30", "--json"])
    assert result.exit_code == 0, result.output
    report = _json(result)
    assert report["images"] == 18 and report["machine"]["cores"] >= 1
    assert report["settings"]["embedder"] == "efficientnet-lite0"
    (model, raw) = report["results"].values()
    # Solid colours with noise: both the embedder and raw pixels separate them perfectly.
    assert model["overall"]["R@1"] == 1.0 and raw["overall"]["R@1"] == 1.0
    assert set(model["per_class"]) == {"red", "blue", "green"}


def test_eval_without_the_dataset_says_how_to_install(env, tmp_path):
    env.setenv("VITRINE_FASHION_MNIST_DIR", str(tmp_path / "nowhere"))
    result = runner.invoke(app, ["eval", "retrieval", "--dataset", "fashion-mnist"])
    assert result.exit_code == 1 and "apt-get install dataset-fashion-mnist" in result.stderr


def test_bench_vision_json(env):
    result = runner.invoke(app, ["bench", "vision", "--images", "32", "--json"])
    assert result.exit_code == 0, result.output
    report = _json(result)
    assert report["images"] == 32 and report["peak_rss_mb"] > 50
    assert report["detection"]["images_per_s"] > 0
    runs = report["embedding"][0]["runs"]
    assert [r["batch"] for r in runs] == [1, 32] and all(r["images"] == 32 for r in runs)
    assert report["machine"]["cpu"] and report["settings"]["use_onnx"] is True
    assert report["pipeline"]["images"] == 32 and report["pipeline"]["images_per_s"] > 0
