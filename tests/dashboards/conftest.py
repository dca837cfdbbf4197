"""Fixtures of the dashboard tests: the known data set of tests/dashboards/seed.py on this test's stack."""

from __future__ import annotations

import pytest

from tests.dashboards.seed import Seeded, seed
from tests.helpers import settings_env


@pytest.fixture
def seeded(settings, sessions, monkeypatch) -> Seeded:
    """The known data set, with the process environment pointing the app at this test's stack."""
    import streamlit as st

    for k, v in settings_env(settings).items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("VITRINE_ADMIN_KEY", raising=False)
    st.cache_data.clear()
    yield seed(settings, sessions)
    from dashboards import data

    # The app's pooled connections would otherwise keep Postgres from shutting down at the end of the run.
    data.engine(settings.database_url).dispose()
    data.engine.clear()
