"""Migration 0005 backfills the experiment rollup from events that already exist."""

from __future__ import annotations

import itertools
import os

import pytest
from alembic import command
from sqlalchemy import text

from db.experiment_stats import load_arm_stats, load_daily_stats
from db.migrate import alembic_config, upgrade
from db.session import create_db_engine
from tests.experiments.rollup_data import SCENARIO, START, random_events, setup_tenants, write

pytestmark = pytest.mark.integration

_names = itertools.count()


def test_upgrade_backfills_existing_events(postgres):
    url = postgres.create_database(f"m{os.getpid()}_{next(_names)}")  # empty, not from the template
    upgrade(url, "0004")
    engine = create_db_engine(url)
    try:
        setup_tenants(engine)
        write(engine, SCENARIO + random_events(5), batch=300)  # no triggers yet: raw events only
        upgrade(url)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM experiment_users")).scalar() > 0
            for key in ("e1", "e2"):
                rollup = load_arm_stats(conn, "t1", key, start=START, source="rollup").with_daily(
                    load_daily_stats(conn, "t1", key, start=START, source="rollup")
                )
                raw = load_arm_stats(conn, "t1", key, start=START, source="raw").with_daily(
                    load_daily_stats(conn, "t1", key, start=START, source="raw")
                )
                assert rollup.arms and rollup == raw
        # and the triggers keep it current from here on
        write(engine, [dict(SCENARIO[0], event_id="late-1", request_id="late", user_id="u1")])
        with engine.connect() as conn:
            assert load_arm_stats(conn, "t1", "e1", start=START, source="rollup") == load_arm_stats(
                conn, "t1", "e1", start=START, source="raw"
            )
        command.downgrade(alembic_config(url), "0004")  # drops tables, functions and triggers
        with engine.connect() as conn:
            assert conn.execute(text("SELECT to_regclass('experiment_users')")).scalar() is None
        write(engine, [dict(SCENARIO[0], event_id="late-2")])  # no trigger left behind
        upgrade(url)
        with engine.connect() as conn:
            assert load_arm_stats(conn, "t1", "e1", start=START, source="rollup") == load_arm_stats(
                conn, "t1", "e1", start=START, source="raw"
            )
    finally:
        engine.dispose()
