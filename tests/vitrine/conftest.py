"""Fixtures for the roof's tests (CLI, benchmarks, stack launcher)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """A VITRINE_DATA_DIR for the session; its models/ cache is shared by the CLI and benchmark tests."""
    return tmp_path_factory.mktemp("vitrine-cli-data")
