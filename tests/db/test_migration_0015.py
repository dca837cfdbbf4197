"""Migration 0015 (tower deployments, retiring) creates what db/models.py declares."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_migration_0015_creates_what_the_model_declares(db_engine):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from db.models import Base

    with db_engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert [d for d in diffs if "model_deployments" in repr(d)] == []  # needs_images, items_failed
