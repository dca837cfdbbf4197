"""Welch t-test from sufficient statistics vs statsmodels/scipy on the raw data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ttest_ind
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from experiments.means import WelchTTest
from experiments.result import ErrorCode
from experiments.stats import SampleMeanStatistic
from tests.experiments.stat_cases import TwoArmTestCases

CONTROL = np.array([0, 0, 0, 12.5, 0, 30, 0, 0, 8, 0.0])  # revenue per user, many zeros
TREATMENT = np.array([0, 15, 0, 0, 22, 0, 40, 0, 0, 0, 9.0])


def stat(x: np.ndarray) -> SampleMeanStatistic:
    return SampleMeanStatistic(len(x), float(x.sum()), float((x * x).sum()))


class TestWelchTTest(TwoArmTestCases):
    """The shared properties (stat_cases.py) on Welch's t-test."""

    METHOD = "Welch t-test"
    # means 10.0 vs 11.5 on 1000 users each: t = 3.21, p = 0.0013
    SIGNIFICANT = (SampleMeanStatistic(1000, 10_000, 200_000), SampleMeanStatistic(1000, 11_500, 250_000))
    NOT_SIGNIFICANT = (stat(CONTROL), stat(TREATMENT))  # p = 0.588 (test_frozen_reference_values)
    ZERO_BASELINE = (SampleMeanStatistic(10, 0, 0), SampleMeanStatistic(10, 30, 200))
    DEGENERATE = (
        (SampleMeanStatistic(0, 0, 0), SampleMeanStatistic(10, 5, 5), ErrorCode.ZERO_USERS),
        (SampleMeanStatistic(1, 3, 9), SampleMeanStatistic(10, 5, 5), ErrorCode.TOO_FEW_USERS),
        (SampleMeanStatistic(10, 20, 40), SampleMeanStatistic(10, 30, 90), ErrorCode.ZERO_VARIANCE),
        (SampleMeanStatistic(10, float("nan"), 1), SampleMeanStatistic(10, 3, 9), ErrorCode.INVALID_INPUT),
    )

    def make(self, control, treatment):
        return WelchTTest(control, treatment, self.ALPHA)


def test_matches_statsmodels_compare_means_on_raw_data():
    r = WelchTTest(stat(CONTROL), stat(TREATMENT)).compute_result()
    cm = CompareMeans(DescrStatsW(TREATMENT), DescrStatsW(CONTROL))
    t, p, dof = cm.ttest_ind(usevar="unequal")
    assert r.statistic == pytest.approx(t, rel=1e-12)
    assert r.p_value == pytest.approx(p, rel=1e-12)
    assert r.effect_ci == pytest.approx(cm.tconfint_diff(usevar="unequal"), rel=1e-12)
    assert p == pytest.approx(ttest_ind(TREATMENT, CONTROL, equal_var=False).pvalue, rel=1e-12)


def test_frozen_reference_values():
    # statsmodels 0.15 CompareMeans(...).ttest_ind(usevar="unequal") on the arrays above, run once:
    # t = 0.5511236, p = 0.5881909, dof = 18.36794, CI (-7.769191, 13.305555).
    r = WelchTTest(stat(CONTROL), stat(TREATMENT)).compute_result()
    assert (r.statistic, r.p_value) == pytest.approx((0.5511236, 0.5881909), abs=1e-7)
    assert r.effect_ci == pytest.approx((-7.769191, 13.305555), abs=1e-6)


def test_lift_uses_the_delta_method():
    c, t = stat(CONTROL), stat(TREATMENT)
    r = WelchTTest(c, t).compute_result()
    assert r.lift == pytest.approx(t.mean / c.mean - 1)
    var = t.variance_of_mean / c.mean**2 + t.mean**2 * c.variance_of_mean / c.mean**4
    from scipy.stats import t as tdist

    half = tdist.ppf(0.975, 18.36794056901214) * var**0.5
    assert r.lift_ci == pytest.approx((r.lift - half, r.lift + half), rel=1e-9)
