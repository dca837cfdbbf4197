"""A/A through the loader (`vitrine experiment simulate --loader`): the events it writes, and a small-n smoke run."""

import json

import numpy as np
import pytest
from sqlalchemy import text
from typer.testing import CliRunner

import vitrine.cli.experiment  # noqa: F401  registers the commands
from db.experiment_stats import load_arm_stats
from experiments.simulate import ctr_arm_stats
from vitrine.bench.loader_aa import START, TENANT, LoaderAASettings, user_draws, write_run
from vitrine.cli.app import app

pytestmark = pytest.mark.integration


def test_written_events_load_back_as_the_simulated_users(db_engine):
    # The loader's sums of what one run wrote equal the sums of the per-user draws themselves.
    s = LoaderAASettings(runs=1, users=300)
    with db_engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO tenants (id, name, storefront_key_hash, admin_key_hash, webhook_secret, default_arm) "
                "VALUES (:t, 't', 's', 'a', 'x', 'baseline')"
            ),
            {"t": TENANT},
        )
    users = user_draws(np.random.default_rng(3), s)
    write_run(db_engine, "aa-check", s, users)
    with db_engine.connect() as conn:
        stats = load_arm_stats(conn, TENANT, "aa-check", start=START)
    arrays = {k: np.asarray(v) for k, v in users.items()}
    for name, rows in (("baseline", slice(0, 30)), ("visual", slice(30, 300))):
        want = ctr_arm_stats(name, *(arrays[k][rows] for k in ("x", "y", "xp", "yp")))
        got = stats.arm(name)
        for field in (
            "users",
            "exposures",
            "clicks",
            "clicks_exposures_sum_products",
            "pre_exposures_sum",
            "pre_clicks_sum",
            "clicks_pre_clicks_sum_products",
            "exposures_pre_exposures_sum_products",
        ):
            assert getattr(got, field) == getattr(want, field), field  # fmt: skip
        rev = arrays["rev"][rows]
        assert got.revenue_sum == pytest.approx(rev.sum(), rel=1e-12) and got.purchasers == int((rev > 0).sum())
    assert stats.revenue_cap == pytest.approx(float(np.quantile(arrays["rev"], 0.99)), rel=1e-12)


def test_cli_smoke_uses_a_scratch_database_and_drops_it(db_engine, monkeypatch, tmp_path):
    monkeypatch.setenv("VITRINE_DATABASE_URL", db_engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("VITRINE_DATA_DIR", str(tmp_path))
    out = CliRunner().invoke(
        app, ["experiment", "simulate", "--loader", "--loader-runs", "2", "--loader-users", "300", "--json"]
    )
    assert out.exit_code == 0, out.output
    d = json.loads(out.output)
    assert d["settings"]["runs"] == 2 and d["ctr_fpr"]["runs"] == d["revenue_fpr_capped"]["runs"] == 2
    assert (d["users_control"], d["users_treatment"]) == (30, 270) and d["events_per_run"] > 300
    assert d["ctr_cuped_runs"] == 2 and d["machine"]["cores"] >= 1  # every run had a pre-period: CUPED on CTR
    with db_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM interaction_events")).scalar() == 0  # never touched
        assert not conn.execute(text("SELECT count(*) FROM pg_database WHERE datname LIKE 'vitrine_aa_%'")).scalar()
    bad = CliRunner().invoke(app, ["experiment", "simulate", "--loader", "--alpha", "0"])
    assert bad.exit_code == 1 and "alpha" in bad.output
