"""Migration 0016 drops the binary and codes kinds' HNSW indexes (they became IVFFlat), and nothing else."""

from __future__ import annotations

import itertools
import os

import pytest
from alembic import command
from sqlalchemy import text

from db.migrate import alembic_config, upgrade
from db.session import create_db_engine
from db.vector_index import ensure_vector_index, index_name

pytestmark = pytest.mark.integration

_names = itertools.count()


def _indexes(engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.scalars(text("SELECT indexname FROM pg_indexes WHERE tablename = 'items'")))


def test_upgrade_drops_the_old_hamming_graphs_only(postgres):
    url = postgres.create_database(f"m16_{os.getpid()}_{next(_names)}")  # empty, not from the template
    upgrade(url, "0015")
    engine = create_db_engine(url)
    old = ["ix_items_hnsw_bin_0123456789ab", "ix_items_hnsw_codes_0123456789ab"]
    try:
        with engine.begin() as conn:
            for name, key in zip(old, ["m@1", "m@1+codes"], strict=True):  # as the previous code built them
                conn.execute(
                    text(
                        f"CREATE INDEX {name} ON items USING hnsw "
                        f"((binary_quantize(embedding::vector(8))::bit(8)) bit_hamming_ops) WHERE model = '{key}'"
                    )
                )
            kept = ensure_vector_index(conn, "m@1", 8)  # halfvec: its name and structure are unchanged
        before = _indexes(engine)
        upgrade(url)
        after = _indexes(engine)
        assert set(old) <= before and not set(old) & after
        assert before - after == set(old) and kept in after
        with engine.begin() as conn:
            built = ensure_vector_index(conn, "m@1", 8, kind="binary")
        assert built == index_name("m@1", "binary") and built in _indexes(engine)
        command.downgrade(alembic_config(url), "0015")
        assert built not in _indexes(engine) and kept in _indexes(engine)
    finally:
        engine.dispose()
