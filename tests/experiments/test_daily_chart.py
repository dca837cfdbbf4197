"""The daily chart and the table agree: the per-day series caps revenue with the table's cap (issue #17)."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import text

from db.experiment_stats import load_experiment
from experiments.report import build_report, daily_series
from vitrine.bench.loader_aa import TENANT, LoaderAASettings, user_draws, write_run

pytestmark = pytest.mark.integration


def test_chart_revenue_at_the_last_day_equals_the_tables_with_one_whale(db_engine):
    # 2,000 users (200 control, seeded), 5 % buyers; one treatment user spends 1,000,000: capped at p99 in the table.
    s = LoaderAASettings(runs=1, users=2000, seed=4)
    users = user_draws(np.random.default_rng(s.seed), s)
    users["rev"][1500] = 1_000_000.0
    with db_engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO tenants (id, name, storefront_key_hash, admin_key_hash, webhook_secret, default_arm) "
                "VALUES (:t, 't', 's', 'a', 'x', 'baseline')"
            ),
            {"t": TENANT},
        )
    write_run(db_engine, "whale", s, users)
    for source in ("rollup", "raw"):
        with db_engine.connect() as conn:
            loaded = load_experiment(conn, TENANT, "whale", daily=True, source=source)
        stats = loaded.stats
        assert stats.revenue_cap < 10_000 and len({d.day for d in stats.daily}) >= 5
        table = next(m for m in build_report(loaded.definition, stats)["metrics"] if m["name"] == "revenue_per_user")
        control, treatment = (r["value"] for r in table["rows"])
        chart = daily_series(loaded.definition, stats, "revenue_per_user")
        last = chart[-1]
        assert last["day"] == max(d.day for d in stats.daily).isoformat()
        assert last["control_value"] == pytest.approx(control, rel=1e-9, abs=1e-9)
        assert last["value"] == pytest.approx(treatment, rel=1e-9, abs=1e-9)
        # the whale is capped in both: uncapped, the treatment's mean would be above 1,000,000 / 1,800
        assert last["value"] < 100
        uncapped = daily_series(loaded.definition, stats, "revenue_per_user", cap_revenue=False)[-1]
        assert uncapped["value"] > 1_000_000 / 1800
