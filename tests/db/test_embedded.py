"""The embedded Postgres runs with our settings (shared_buffers sized for the HNSW index)."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from db.embedded import EmbeddedPostgres, default_shared_buffers
from db.session import create_db_engine

pytestmark = pytest.mark.integration


def shared_buffers_mb(url: str) -> int:
    engine = create_db_engine(url)
    try:
        with engine.connect() as c:  # pg_settings gives shared_buffers in 8 kB pages
            return c.scalar(text("SELECT setting::bigint * 8 / 1024 FROM pg_settings WHERE name = 'shared_buffers'"))
    finally:
        engine.dispose()


def test_default_shared_buffers_is_a_quarter_of_memory_within_bounds():
    mb = int(default_shared_buffers().removesuffix("MB"))
    assert 128 <= mb <= 2048


def test_the_session_server_runs_with_the_default(postgres):
    assert shared_buffers_mb(postgres.url) == int(default_shared_buffers().removesuffix("MB"))


def test_a_fresh_data_dir_starts_with_the_setting_and_keeps_it_across_restarts(state_dir, tmp_path):
    pg = EmbeddedPostgres(state_dir / f"own-pg-{tmp_path.name}", shared_buffers="160MB").start()
    try:
        assert shared_buffers_mb(pg.url) == 160
        pg.stop()
        pg.shared_buffers = "176MB"  # a changed setting applies at the next start
        pg.start()
        assert shared_buffers_mb(pg.url) == 176
    finally:
        pg.stop()
