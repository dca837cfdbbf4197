"""Shared fixtures for the vision tests: real photos shipped by dependencies, cached models."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from PIL import Image


def _package_dir(name: str) -> Path:
    # Located without importing: importing ultralytics writes its settings file and patches PIL.
    return Path(importlib.util.find_spec(name).submodule_search_locations[0])


def _asset_dirs() -> tuple[Path, Path]:
    return _package_dir("ultralytics") / "assets", _package_dir("matplotlib") / "mpl-data" / "sample_data"


@pytest.fixture(scope="session")
def photos() -> dict[str, Image.Image]:
    """Real photos: ultralytics' bus.jpg and zidane.jpg, matplotlib's grace_hopper.jpg."""
    ultra, mpl = _asset_dirs()
    paths = {"bus": ultra / "bus.jpg", "zidane": ultra / "zidane.jpg", "hopper": mpl / "grace_hopper.jpg"}
    return {k: Image.open(p).convert("RGB") for k, p in paths.items()}


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """A VITRINE_DATA_DIR for the session; its models/ cache is shared by all vision tests."""
    return tmp_path_factory.mktemp("vitrine-data")


@pytest.fixture(scope="session")
def model_cache(data_dir) -> Path:
    """One models cache per test session (data_dir/models, as the CLI uses), so ONNX exports happen once."""
    path = data_dir / "models"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def effnet_torch(model_cache):
    from vision.embedder import create_embedder

    emb = create_embedder("efficientnet-lite0", cache_dir=model_cache, batch_size=4, use_onnx=False)
    emb.load()
    return emb


@pytest.fixture(scope="session")
def effnet_onnx(model_cache):
    from vision.embedder import create_embedder

    emb = create_embedder("efficientnet-lite0", cache_dir=model_cache, batch_size=4, use_onnx=True)
    emb.load()
    return emb
