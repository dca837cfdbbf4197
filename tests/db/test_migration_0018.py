"""Migration 0018 adds a tower's repair mark and phase `repair`; downgrade ends a pass under way and drops both."""

from __future__ import annotations

import os

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db.migrate import alembic_config, upgrade
from db.session import create_db_engine
from db.tenants import create_tenant

pytestmark = pytest.mark.integration

_ROW = """INSERT INTO model_deployments (tenant_id, model_key, source_key, dim, artefact_path, status, phase)
          VALUES ('acme', :key, 'src@1', 4, '/m.vtm', 'ready', :phase)"""


def test_upgrade_and_downgrade(postgres):
    url = postgres.create_database(f"m18_{os.getpid()}")  # empty, not from the template
    upgrade(url, "0017")
    engine = create_db_engine(url)
    try:
        with Session(engine) as s, s.begin():
            create_tenant(s, "Acme", "acme")  # the tenants table is the same at 0017 and 0018
        with engine.begin() as conn:
            conn.execute(text(_ROW), {"key": "old@1", "phase": "done"})
            with pytest.raises(IntegrityError), conn.begin_nested():
                conn.execute(text(_ROW), {"key": "t@1", "phase": "repair"})
        upgrade(url)
        with engine.begin() as conn:
            assert conn.scalar(text("SELECT repair_from FROM model_deployments WHERE model_key = 'old@1'")) is None
            conn.execute(text(_ROW), {"key": "t@1", "phase": "repair"})
            conn.execute(text("UPDATE model_deployments SET repair_from = 42 WHERE model_key = 't@1'"))
        command.downgrade(alembic_config(url), "0017")
        with engine.connect() as conn:
            phases = dict(conn.execute(text("SELECT model_key, phase FROM model_deployments")).all())
            columns = set(conn.scalars(text("SELECT column_name FROM information_schema.columns "
                                             "WHERE table_name = 'model_deployments'")))  # fmt: skip
        assert phases == {"old@1": "done", "t@1": "done"} and "repair_from" not in columns
    finally:
        engine.dispose()
