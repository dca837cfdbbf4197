"""Power follows the decision rule (issue #17, defect 3): the decision's alpha, the sequential width, too early."""

from __future__ import annotations

import math

import numpy as np
import pytest

from experiments.definition import Arm, ExperimentDefinition
from experiments.power import mean_power, proportion_power, sequential_critical_value
from experiments.proportions import TwoProportionZTest
from experiments.report import build_report
from experiments.sequential import SequentialTest, sequence_halfwidth
from experiments.stats import ExperimentStats, ProportionStatistic
from tests.experiments.helpers import conversion_arm

DEF = ExperimentDefinition("e", (Arm("baseline", 0.5), Arm("visual", 0.5)), primary_metric="conversion")


STATS = ExperimentStats("e", (conversion_arm("baseline", 5000, 250), conversion_arm("visual", 5000, 260)))


def power_of(rep: dict, metric: str) -> dict:
    return next(m for m in rep["metrics"] if m["name"] == metric)["rows"][1]["power"]


def test_power_uses_the_decisions_alpha():
    rep = build_report(DEF, STATS, days_elapsed=5)
    assert power_of(rep, "conversion")["alpha"] == 0.05  # the primary, undiluted
    # 3 secondaries, Holm: the first rejection needs p < alpha / 3, so power is planned at that level
    assert power_of(rep, "ctr")["alpha"] == pytest.approx(0.05 / 3)
    assert power_of(rep, "revenue_per_user")["alpha"] == pytest.approx(0.05 / 3)
    # planned at alpha / 3, the MDE is larger than at alpha
    assert (
        proportion_power(0.05, 5000, 5000).mde_relative
        < proportion_power(0.05, 5000, 5000, alpha=0.05 / 3).mde_relative
    )


def test_sequential_critical_value_is_the_sequence_half_width_in_standard_errors():
    for n, tuning in ((200, 5000), (10_000, 5000), (10_000, 100_000)):
        se = math.sqrt(3.0 / n)
        assert sequential_critical_value(n, 0.05, tuning) == pytest.approx(
            sequence_halfwidth(se**2, n, 0.05, tuning) / se
        )
    # wider than z = 1.96, so the sequential MDE and sample size are larger
    fixed, seq = mean_power(10.0, 20.0, 2000, 2000), mean_power(10.0, 20.0, 2000, 2000, sequential_tuning_n=5000)
    assert seq.mde_relative > 1.3 * fixed.mde_relative and seq.required_n_control > fixed.required_n_control
    rep = build_report(DEF, STATS, days_elapsed=5, sequential=True, tuning_n=5000)
    assert power_of(rep, "conversion")["sequential_tuning_n"] == 5000


def test_sequential_power_is_the_empirical_power_at_the_required_n():
    # 2,000 seeded replications of the always-valid test at the size it says detects +20 % on 10 %:
    # rejections at the horizon within 3 points of the 80 % asked for
    pw = proportion_power(0.10, 100, 100, target_relative_mde=0.2, sequential_tuning_n=5000)
    n = pw.required_n_control
    rng = np.random.default_rng(17)
    c, t = rng.binomial(n, 0.10, 2000), rng.binomial(n, 0.12, 2000)
    hits = [
        SequentialTest(TwoProportionZTest(ProportionStatistic(n, a), ProportionStatistic(n, b)), 5000)
        .compute_result()
        .p_value
        < 0.05
        for a, b in zip(c, t)
    ]
    assert abs(np.mean(hits) - 0.80) < 0.03, (n, np.mean(hits))


def test_too_early_to_tell_before_a_full_day():
    # 8 minutes of traffic: no extrapolation (before: 5,000 users in 8 min read as 900,000 a day, "0.0 days")
    rep = build_report(DEF, STATS, days_elapsed=8 / 1440)
    pw = power_of(rep, "conversion")
    assert pw["days_remaining"] is None and pw["too_early"] and pw["required_n_control"] > 5000
    later = power_of(build_report(DEF, STATS, days_elapsed=2), "conversion")
    assert (
        later["days_remaining"] == pytest.approx((later["required_n_control"] - 5000) / 2500) and not later["too_early"]
    )
