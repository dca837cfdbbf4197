"""Report: structure, JSON safety, significance and labels, SRM first, CUPED only with pre-period."""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pytest

from experiments.daily import cumulate_daily
from experiments.definition import Arm, ExperimentDefinition
from experiments.report import build_report, render_text
from experiments.stats import ArmStats, DailyArmStats, ExperimentStats

DEF = ExperimentDefinition("exp", (Arm("baseline", 0.5), Arm("visual", 0.5)), primary_metric="conversion")


def arm(name: str, n: int, ctr: float, conv: float, seed: int, pre: bool = False) -> ArmStats:
    rng = np.random.default_rng(seed)
    x = 1 + rng.poisson(3, n)
    y = rng.binomial(x, ctr)
    pre_rev = np.where(rng.random(n) < 0.3, rng.gamma(2, 10, n), 0.0) if pre else np.zeros(n)
    buy = rng.random(n) < conv
    rev = np.where(buy, rng.gamma(2, 10, n) + 0.5 * pre_rev, 0.0)
    return ArmStats.from_users(name, x.tolist(), y.tolist(), rev.tolist(), pre_rev.tolist())


def test_report_structure_and_json():
    stats = ExperimentStats("exp", (arm("baseline", 5000, 0.10, 0.05, 1), arm("visual", 5000, 0.12, 0.05, 2)))
    rep = build_report(DEF, stats, days_elapsed=5, tenant_id="t1")
    json.dumps(rep, allow_nan=False)
    assert rep["srm"]["status"] == "ok" and rep["control"] == "baseline" and rep["cuped"] is False
    assert [m["name"] for m in rep["metrics"]] == ["ctr", "ctr_per_user", "conversion", "revenue_per_user"]
    ctr = rep["metrics"][0]
    control, visual = ctr["rows"]
    assert control["is_control"] and "p_value" not in control
    for key in ("n", "value", "ci", "lift", "lift_ci", "p_value", "p_value_adjusted", "significant", "power"):
        assert key in visual
    assert visual["significant"] and visual["p_value_adjusted"] >= visual["p_value"]
    assert rep["metrics"][2]["primary"]
    # the primary (conversion) is its own family: Holm runs over the 3 secondaries only (issue #17, defect 4)
    assert rep["correction"]["method"] == "holm" and "3 secondary comparisons" in rep["correction"]["family"]
    # 5,000 control users in 5 days: 1,000 a day, so the users the target MDE still needs take this many days
    pw = visual["power"]
    assert pw["n_control"] == 5000 and pw["required_n_control"] > 5000
    assert pw["days_remaining"] == pytest.approx((pw["required_n_control"] - 5000) / 1000)


def test_text_shows_srm_before_results_and_labels_the_correction():
    stats = ExperimentStats("exp", (arm("baseline", 3000, 0.1, 0.05, 1), arm("visual", 3600, 0.1, 0.05, 2)))
    text = render_text(build_report(DEF, stats, correction="fdr_bh"))
    lines = text.splitlines()
    srm_line = next(i for i, line in enumerate(lines) if line.startswith("SRM:"))
    first_table = next(i for i, line in enumerate(lines) if line.startswith("arm "))
    assert srm_line < first_table and "MISMATCH" in lines[srm_line]
    assert any("SAMPLE RATIO MISMATCH" in line for line in lines[:first_table])
    assert "Benjamini-Hochberg" in text


def test_cuped_only_when_every_arm_has_pre_period_data():
    with_pre = ExperimentStats(
        "exp", (arm("baseline", 3000, 0.1, 0.05, 1, pre=True), arm("visual", 3000, 0.1, 0.05, 2, pre=True))
    )
    rep = build_report(DEF, with_pre)
    by = {m["name"]: m for m in rep["metrics"]}
    assert rep["cuped"] and by["revenue_per_user"]["cuped"] and not by["ctr"]["cuped"]
    assert by["revenue_per_user"]["rows"][1]["method"] == "CUPED Welch t-test"
    assert build_report(DEF, with_pre, cuped=False)["cuped"] is False
    without = ExperimentStats("exp", (arm("baseline", 3000, 0.1, 0.05, 1), arm("visual", 3000, 0.1, 0.05, 2)))
    assert build_report(DEF, without)["cuped"] is False


def test_sequential_report_is_labelled():
    stats = ExperimentStats("exp", (arm("baseline", 2000, 0.1, 0.05, 1), arm("visual", 2000, 0.1, 0.05, 2)))
    rep = build_report(DEF, stats, sequential=True, tuning_n=4000)
    assert rep["analysis"].startswith("sequential") and "tuning_n=4000" in rep["metrics"][0]["rows"][1]["method"]


@pytest.mark.parametrize(
    "arms",
    [
        (),
        (ArmStats("baseline"),),
        (ArmStats("baseline"), ArmStats("visual")),
        (
            ArmStats("baseline", users=10, exposures=10, exposures_sum_squares=10),
            ArmStats("visual", users=10, exposures=10, exposures_sum_squares=10),
        ),  # no clicks, no revenue
        (
            ArmStats.from_users("baseline", [1] * 5, [1] * 5, [3.0] * 5),
            ArmStats.from_users("visual", [1] * 5, [1] * 5, [3.0] * 5),
        ),  # everyone clicks and buys
    ],
)
def test_degenerate_data_never_gives_nan_or_exceptions(arms):
    rep = build_report(DEF, ExperimentStats("exp", arms))
    json.dumps(rep, allow_nan=False)
    render_text(rep)
    for m in rep["metrics"]:
        for r in m["rows"]:
            if not r["is_control"]:
                assert r["p_value"] == 1.0 and r["error"] is not None and not r["significant"]


def test_unknown_arm_in_data_is_an_srm_and_no_definition_uses_equal_weights():
    stats = ExperimentStats(
        "exp", (arm("baseline", 1000, 0.1, 0.05, 1), arm("visual", 1000, 0.1, 0.05, 2), arm("rogue", 100, 0.1, 0.05, 3))
    )
    assert build_report(DEF, stats)["srm"]["mismatch"]
    rep = build_report(None, ExperimentStats("exp", stats.arms[:2]))
    assert rep["control"] == "baseline" and [a["weight"] for a in rep["arms"]] == [0.5, 0.5]
    with pytest.raises(ValueError, match="unknown metrics"):
        build_report(DEF, stats, metrics=["nope"])


def test_cumulate_daily_carries_arms_forward_over_empty_days():
    rows = [
        ("a", date(2026, 1, 1), {"users": 2, "clicks": 1}),
        ("b", date(2026, 1, 1), {"users": 1}),
        ("a", date(2026, 1, 3), {"users": 1, "clicks": 2}),
    ]
    daily = cumulate_daily(rows)
    got = {(d.day.day, d.stats.arm): (d.stats.users, d.stats.clicks) for d in daily}
    assert got == {
        (1, "a"): (2, 1),
        (1, "b"): (1, 0),
        (2, "a"): (2, 1),
        (2, "b"): (1, 0),
        (3, "a"): (3, 3),
        (3, "b"): (1, 0),
    }
    assert all(isinstance(d, DailyArmStats) for d in daily)
    stats = ExperimentStats("exp", ()).with_daily(daily)
    assert build_report(None, stats)["days_elapsed"] == 3.0


def test_daily_series_is_sequential_by_default():
    from experiments.report import daily_series

    days = []
    for i, n in enumerate((1000, 2000, 3000)):
        for name, seed in (("baseline", 1), ("visual", 2)):
            days.append(DailyArmStats(date(2026, 1, 1 + i), arm(name, n, 0.1, 0.05, seed)))
    stats = ExperimentStats("exp", ()).with_daily(tuple(days))
    series = daily_series(DEF, stats, "conversion")
    assert [s["day"] for s in series] == ["2026-01-01", "2026-01-02", "2026-01-03"]
    assert all(s["arm"] == "visual" and "sequential" in s["method"] for s in series)
    assert [s["n"] for s in series] == [1000, 2000, 3000]
    json.dumps(series, allow_nan=False)
    assert daily_series(None, stats, "ctr", sequential=False)[0]["method"].startswith("delta-method")
    assert daily_series(DEF, ExperimentStats("exp", ()), "ctr") == []
