"""Loader integration tests: known events in Postgres vs statistics computed by hand.

The scenario (exposures, clicks, purchases of six users) and every expected sum below
were worked out by hand from the event list; comments show the per-user values.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import numpy as np
import pytest
from sqlalchemy import text

from db.experiment_stats import load_arm_stats, load_daily_stats, load_experiment_stats
from db.experiments import load_definition
from experiments.analysis import Attribution
from experiments.stats import ArmStats

pytestmark = pytest.mark.integration

T = "t1"
START = datetime(2026, 1, 10, tzinfo=UTC)


def ts(day: int, hh: int, mm: int = 0) -> datetime:
    return datetime(2026, 1, day, hh, mm, tzinfo=UTC)


# (tenant, type, user, request, experiment, arm, value, occurred_at)
EVENTS = [
    # u1, baseline: exposures r1, r2; two clicks on r1; purchase 20 on r2 -> x=2 y=2 rev=20
    (T, "exposure", "u1", "r1", "exp1", "baseline", None, ts(10, 10)),
    (T, "exposure", "u1", "r2", "exp1", "baseline", None, ts(11, 9)),
    (T, "click", "u1", "r1", "exp1", "baseline", None, ts(10, 10, 1)),
    (T, "click", "u1", "r1", "exp1", "baseline", None, ts(10, 10, 2)),
    (T, "purchase", "u1", "r2", "exp1", "baseline", 20.0, ts(11, 9, 30)),
    # a click on r1 stamped weeks before the start (beyond the 1 h clock-skew slack and the
    # 14-day pre-period): never counted
    (T, "click", "u1", "r1", "exp1", "baseline", None, datetime(2025, 12, 20, tzinfo=UTC)),
    # u2, baseline: one exposure; a purchase of 5 without request id (window mode only)
    (T, "exposure", "u2", "r3", "exp1", "baseline", None, ts(10, 12)),
    (T, "purchase", "u2", None, None, None, 5.0, ts(10, 13)),
    # u3, visual: three exposures; a click on r5 two days after the first exposure
    # (request mode only); pre-period purchase of 30 and a pre-period exposure (another experiment)
    (T, "exposure", "u3", "r4", "exp1", "visual", None, ts(10, 8)),
    (T, "exposure", "u3", "r5", "exp1", "visual", None, ts(12, 8)),
    (T, "exposure", "u3", "r6", "exp1", "visual", None, ts(12, 8, 5)),
    (T, "click", "u3", "r5", "exp1", "visual", None, ts(12, 8, 1)),
    (T, "purchase", "u3", None, None, None, 30.0, ts(5, 12)),
    (T, "exposure", "u3", "r0", "exp0", "baseline", None, ts(6, 10)),
    # a click carrying u3's request id but from another user: never attributed
    (T, "click", "u9", "r4", "exp1", "visual", None, ts(10, 8, 1)),
    # u4, visual: one exposure, a click, two purchases (10 + 15); pre-period click
    (T, "exposure", "u4", "r7", "exp1", "visual", None, ts(11, 15)),
    (T, "click", "u4", "r7", "exp1", "visual", None, ts(11, 15, 1)),
    (T, "purchase", "u4", "r7", "exp1", "visual", 10.0, ts(11, 15, 10)),
    (T, "purchase", "u4", "r7", "exp1", "visual", 15.0, ts(11, 15, 20)),
    (T, "click", "u4", "rx", None, None, None, ts(8, 9)),
    # u5 exposed to both arms: excluded, counted as multi-arm
    (T, "exposure", "u5", "r8", "exp1", "baseline", None, ts(10, 9)),
    (T, "exposure", "u5", "r9", "exp1", "visual", None, ts(10, 9, 30)),
    # u6 exposed before the start only; other experiment; other tenant
    (T, "exposure", "u6", "r10", "exp1", "visual", None, ts(9, 9)),
    (T, "exposure", "u1", "r11", "exp2", "visual", None, ts(10, 11)),
    ("t2", "exposure", "u1", "r12", "exp1", "visual", None, ts(10, 11)),
]


@pytest.fixture
def engine(db_engine):  # a fresh, migrated Postgres per test (tests/conftest.py)
    with db_engine.begin() as conn:
        for tid in (T, "t2"):
            conn.execute(
                text(
                    "INSERT INTO tenants (id, name, storefront_key_hash, admin_key_hash, webhook_secret, default_arm) "
                    "VALUES (:id, :name, :s, :a, 'x', 'baseline')"
                ),
                {"id": tid, "name": tid, "s": "s" + tid, "a": "a" + tid},
            )
        conn.execute(
            text(
                "INSERT INTO experiments (tenant_id, key, placement, status, arms, traffic_fraction, salt, "
                "hash_version, primary_metric, guardrails, started_at) VALUES (:t, 'exp1', 'similar', 'running', "
                "CAST(:arms AS jsonb), 1.0, 'salt1', 1, 'conversion', '[]'::jsonb, :start)"
            ),
            {
                "t": T,
                "arms": json.dumps([{"name": "baseline", "weight": 0.5}, {"name": "visual", "weight": 0.5}]),
                "start": START,
            },
        )
        conn.execute(
            text(
                "INSERT INTO interaction_events (tenant_id, event_id, type, user_id, request_id, product_id, "
                "experiment, arm, value, payload, occurred_at) VALUES (:t, :eid, :type, :u, :r, 'p1', :e, :a, :v, "
                "'{}'::jsonb, :at)"
            ),
            [
                {"t": t, "eid": f"e{i}", "type": ty, "u": u, "r": r, "e": e, "a": a, "v": v, "at": at}
                for i, (t, ty, u, r, e, a, v, at) in enumerate(EVENTS)
            ],
        )
    return db_engine


BASELINE_REQUEST = ArmStats(
    arm="baseline",
    users=2,
    exposures=3,
    exposures_sum_squares=5,
    clicks=2,
    clicks_sum_squares=4,
    clicks_exposures_sum_products=4,
    clickers=1,
    click_rate_sum=1.0,
    click_rate_sum_squares=1.0,
    purchasers=1,
    revenue_sum=20.0,
    revenue_sum_squares=400.0,
)
VISUAL_REQUEST = ArmStats(
    arm="visual",
    users=2,
    exposures=4,
    exposures_sum_squares=10,
    clicks=2,
    clicks_sum_squares=2,
    clicks_exposures_sum_products=4,
    clickers=2,
    click_rate_sum=1 / 3 + 1,
    click_rate_sum_squares=1 / 9 + 1,
    purchasers=1,
    revenue_sum=25.0,
    revenue_sum_squares=625.0,
    pre_active_users=2,
    pre_purchasers=1,
    pre_and_post_purchasers=0,
    pre_revenue_sum=30.0,
    pre_revenue_sum_squares=900.0,
    revenue_pre_revenue_sum_products=0.0,
    # pre-period CTR (CUPED for CTR): u3 x=3 y=1 xp=1 yp=0; u4 x=1 y=1 xp=0 yp=1
    pre_exposures_sum=1.0,
    pre_exposures_sum_squares=1.0,
    pre_clicks_sum=1.0,
    pre_clicks_sum_squares=1.0,
    pre_clicks_pre_exposures_sum_products=0.0,
    exposures_pre_exposures_sum_products=3.0,
    exposures_pre_clicks_sum_products=1.0,
    clicks_pre_exposures_sum_products=1.0,
    clicks_pre_clicks_sum_products=1.0,
)


def assert_arm(actual: ArmStats, expected: ArmStats) -> None:
    assert actual.arm == expected.arm
    # the capped revenue sums are checked in test_revenue_is_capped_at_the_p99_of_all_users and the daily test
    a, e = ({k: v for k, v in x.to_dict().items() if not k.startswith("capped_")} for x in (actual, expected))
    del a["arm"], e["arm"]
    assert a == pytest.approx(e, rel=1e-12)


def test_revenue_is_capped_at_the_p99_of_all_users(engine):
    from db.experiment_stats import analyze
    from experiments.analysis import ReportOptions

    # analysed users' revenue: baseline 0 and 20, visual 0 and 25; numpy's linear p99 = 20 + 0.97 * 5 = 24.85
    cap = float(np.quantile([0.0, 20.0, 0.0, 25.0], 0.99))
    with engine.connect() as conn:
        for source in ("raw", "auto"):
            stats = load_arm_stats(conn, T, "exp1", start=START, source=source)
            assert stats.revenue_cap == pytest.approx(cap, rel=1e-12) and stats.revenue_cap_percentile == 0.99
            b, v = stats.arm("baseline"), stats.arm("visual")
            assert (b.capped_revenue_sum, b.capped_revenue_sum_squares) == pytest.approx((20.0, 400.0))
            assert (v.capped_revenue_sum, v.capped_revenue_sum_squares) == pytest.approx((cap, cap * cap))
            assert v.revenue_sum == 25.0  # the uncapped sums stay
        off = load_arm_stats(conn, T, "exp1", start=START, cap_percentile=None)
        assert off.revenue_cap is None and off.arm("visual").capped_revenue_sum == 25.0
        rep = analyze(conn, T, "exp1", ReportOptions(), now=datetime(2026, 1, 13, tzinfo=UTC))
        uncapped = analyze(conn, T, "exp1", ReportOptions(cap_percentile=None), now=datetime(2026, 1, 13, tzinfo=UTC))
    revenue = next(m for m in rep["metrics"] if m["name"] == "revenue_per_user")
    assert revenue["capping"] == {"percentile": 0.99, "cap": pytest.approx(cap), "applied": True}
    assert rep["revenue_capping"]["applied"] and revenue["rows"][1]["value"] == pytest.approx(cap / 2)
    assert next(m for m in uncapped["metrics"] if m["name"] == "revenue_per_user")["rows"][1]["value"] == 12.5


def test_request_attribution_totals(engine):
    with engine.connect() as conn:
        stats = load_arm_stats(conn, T, "exp1", start=START)
    assert [a.arm for a in stats.arms] == ["baseline", "visual"]
    assert stats.multi_arm_users == 1
    assert_arm(stats.arm("baseline"), BASELINE_REQUEST)
    assert_arm(stats.arm("visual"), VISUAL_REQUEST)


def test_window_attribution_totals(engine):
    with engine.connect() as conn:
        stats = load_arm_stats(conn, T, "exp1", start=START, attribution=Attribution("window", 24))
    # u2's purchase without request id now counts; u3's click 48 h later does not.
    assert_arm(
        stats.arm("baseline"),
        ArmStats(**{**BASELINE_REQUEST.to_dict(), "purchasers": 2, "revenue_sum": 25.0, "revenue_sum_squares": 425.0}),
    )
    assert_arm(
        stats.arm("visual"),
        ArmStats(
            **{
                **VISUAL_REQUEST.to_dict(),
                "clicks": 1,
                "clicks_sum_squares": 1,
                "clicks_exposures_sum_products": 1,
                "clickers": 1,
                "click_rate_sum": 1.0,
                "click_rate_sum_squares": 1.0,
                "clicks_pre_exposures_sum_products": 0.0,  # u3's click (y=1 above) is outside the window
            }
        ),
    )


def test_daily_is_cumulative_and_ends_at_totals(engine):
    with engine.connect() as conn:
        daily = load_daily_stats(conn, T, "exp1", start=START)
        totals = load_arm_stats(conn, T, "exp1", start=START)
    days = sorted({d.day for d in daily})
    assert days == [date(2026, 1, 10), date(2026, 1, 11), date(2026, 1, 12)]
    at = {(d.day, d.stats.arm): d.stats for d in daily}
    # End of Jan 10: u1 x=1 y=2 (ctr 2.0), u2 x=1 y=0; u3 x=1 with pre-period revenue 30.
    b10 = at[(date(2026, 1, 10), "baseline")]
    assert (b10.users, b10.exposures, b10.exposures_sum_squares, b10.clicks, b10.clicks_sum_squares) == (2, 2, 2, 2, 4)
    assert b10.click_rate_sum == pytest.approx(2.0) and b10.click_rate_sum_squares == pytest.approx(4.0)
    v10 = at[(date(2026, 1, 10), "visual")]
    assert (v10.users, v10.pre_active_users, v10.pre_purchasers, v10.pre_revenue_sum) == (1, 1, 1, 30.0)
    # End of Jan 11: u1 now x=2 y=2 (ctr 1.0) and purchased 20.
    b11 = at[(date(2026, 1, 11), "baseline")]
    assert b11.click_rate_sum == pytest.approx(1.0) and b11.exposures_sum_squares == pytest.approx(5.0)
    assert (b11.purchasers, b11.revenue_sum, b11.revenue_sum_squares) == (1, 20.0, 400.0)
    for arm in ("baseline", "visual"):
        assert_arm(at[(date(2026, 1, 12), arm)], totals.arm(arm))
        last, total = at[(date(2026, 1, 12), arm)], totals.arm(arm)
        # the chart's capped revenue uses the totals' cap (p99 = 24.85: u4's 25 is capped)
        assert (last.capped_revenue_sum, last.capped_revenue_sum_squares) == pytest.approx(
            (total.capped_revenue_sum, total.capped_revenue_sum_squares), rel=1e-12
        )
    assert at[(date(2026, 1, 11), "visual")].capped_revenue_sum == pytest.approx(24.85, rel=1e-12)
    # u4's pre-period click joins the visual arm on u4's first day (Jan 11)
    assert (at[(date(2026, 1, 10), "visual")].pre_clicks_sum, at[(date(2026, 1, 11), "visual")].pre_clicks_sum) == (
        0,
        1,
    )


def test_definition_and_bounds_from_experiments_table(engine):
    with engine.connect() as conn:
        definition, stats = load_experiment_stats(conn, T, "exp1", daily=True)
        missing = load_definition(conn, T, "nope")
    assert missing is None
    assert definition.arm_names == ("baseline", "visual") and definition.weights == (0.5, 0.5)
    assert definition.salt == "salt1" and definition.primary_metric == "conversion"
    assert definition.started_at == START
    assert_arm(stats.arm("visual"), VISUAL_REQUEST)  # u6 (before started_at) is not counted
    assert stats.daily[-1].day == date(2026, 1, 12)


def test_unknown_experiment_gives_no_arms(engine):
    with engine.connect() as conn:
        stats = load_arm_stats(conn, T, "nope")
    assert stats.arms == () and stats.multi_arm_users == 0
    assert stats.arm("baseline").users == 0


def test_cli_report_reads_the_database(engine, monkeypatch, tmp_path):
    from typer.testing import CliRunner

    import vitrine.cli.experiment  # noqa: F401  registers the commands
    from vitrine.cli.app import app

    monkeypatch.setenv("VITRINE_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("VITRINE_DATA_DIR", str(tmp_path))
    runner = CliRunner()
    out = runner.invoke(app, ["experiment", "report", "exp1", "--tenant", T, "--json"])
    assert out.exit_code == 0, out.output
    rep = json.loads(out.output)
    assert rep["experiment"] == "exp1" and rep["tenant"] == T and rep["multi_arm_users"] == 1
    assert [a["users"] for a in rep["arms"]] == [2, 2]
    text_out = runner.invoke(app, ["experiment", "report", "exp1", "--tenant", T, "--attribution", "window"])
    assert text_out.exit_code == 0 and text_out.output.index("SRM:") < text_out.output.index("arm ")
    assert "capped per user at 24.8500, p99" in text_out.output
    bad_cap = runner.invoke(app, ["experiment", "report", "exp1", "--tenant", T, "--cap-percentile", "1.5"])
    assert bad_cap.exit_code == 1 and "cap percentile must be in (0, 1]" in bad_cap.output
    missing = runner.invoke(app, ["experiment", "report", "nope", "--tenant", T])
    assert missing.exit_code == 1 and "not found" in missing.output


def test_loader_accepts_a_session(engine):
    from sqlalchemy.orm import Session

    with Session(engine) as session:
        stats = load_arm_stats(session, T, "exp1", start=START)
    assert_arm(stats.arm("baseline"), BASELINE_REQUEST)


def test_analyze_uses_the_planned_sample_size_as_tuning_parameter(engine):
    from db.experiment_stats import analyze
    from experiments.analysis import ReportOptions, days_elapsed

    with engine.begin() as conn:
        conn.execute(text("UPDATE experiments SET planned_sample_size = 1234 WHERE key = 'exp1'"))
    with engine.connect() as conn:
        rep = analyze(conn, T, "exp1", ReportOptions(sequential=True), now=datetime(2026, 1, 13, tzinfo=UTC))
        assert analyze(conn, T, "nope") is None
    assert "tuning_n=1234" in rep["analysis"] and rep["days_elapsed"] == pytest.approx(3.0)
    assert rep["primary_metric"] == "conversion" and rep["cuped"] is False  # baseline has no pre-period
    assert days_elapsed(None) is None
