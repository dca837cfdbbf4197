"""Two-proportion z-test: reference values (textbook and one-off statsmodels runs)."""

from __future__ import annotations

import math

import pytest
from scipy.stats import norm

from experiments.proportions import TwoProportionZTest
from experiments.result import ErrorCode
from experiments.stats import ProportionStatistic as P
from tests.experiments.stat_cases import TwoArmTestCases


class TestTwoProportionZTest(TwoArmTestCases):
    """The shared properties (stat_cases.py) on the two-proportion z-test."""

    METHOD = "two-proportion z-test"
    SIGNIFICANT = (P(1000, 100), P(1000, 130))  # p = 0.035 (below)
    NOT_SIGNIFICANT = (P(1000, 100), P(1000, 110))  # p = 0.47
    ZERO_BASELINE = (P(1000, 0), P(1000, 12))
    DEGENERATE = (
        (P(0, 0), P(100, 10), ErrorCode.ZERO_USERS),
        (P(100, 0), P(100, 0), ErrorCode.ZERO_VARIANCE),
        (P(100, 100), P(50, 50), ErrorCode.ALL_CONVERSIONS),
        (P(10, 11), P(10, 1), ErrorCode.INVALID_INPUT),
        (P(-1, 0), P(10, 1), ErrorCode.INVALID_INPUT),
    )

    def make(self, control, treatment):
        return TwoProportionZTest(control, treatment, self.ALPHA)

    def test_degenerate_input_has_no_estimate(self, degenerate):
        control, treatment, _ = degenerate  # nor does SequentialTest get one to build a sequence on
        assert self.make(control, treatment).estimate() is None


def test_z_and_p_match_the_pooled_formula_by_hand():
    # 100/1000 vs 130/1000. By hand: pooled p = 0.115, se = sqrt(0.115 * 0.885 * 2/1000)
    # = 0.0142671, z = 0.03 / se = 2.10274, p = 2 (1 - Phi(z)) = 0.035488.
    r = TwoProportionZTest(P(1000, 100), P(1000, 130)).compute_result()
    se = math.sqrt(0.115 * 0.885 * 2 / 1000)
    assert r.statistic == pytest.approx(0.03 / se, abs=1e-9)
    assert r.p_value == pytest.approx(2 * norm.sf(0.03 / se), abs=1e-12)
    assert r.p_value == pytest.approx(0.0354885, abs=1e-7)  # statsmodels 0.15 proportions_ztest, run once
    assert r.effect == pytest.approx(0.03) and r.lift == pytest.approx(0.3)


def test_difference_ci_is_newcombe_textbook_example():
    # Newcombe (1998), Stat Med 17:873-890, Table II example (a): 56/70 vs 48/80,
    # method 10 (hybrid score) gives 0.0524 to 0.3339.
    lo, hi = TwoProportionZTest(P(80, 48), P(70, 56)).confidence_interval
    assert (lo, hi) == pytest.approx((0.0524, 0.3339), abs=5e-5)


def test_lift_ci_is_the_log_ratio_interval():
    # statsmodels 0.15 confint_proportions_2indep(130, 1000, 100, 1000, compare="ratio",
    # method="log-adjusted") = (1.0164393, 1.6588513), run once; lift = ratio - 1.
    r = TwoProportionZTest(P(1000, 100), P(1000, 130)).compute_result()
    assert r.lift_ci == pytest.approx((0.0164393, 0.6588513), abs=1e-7)
    assert r.effect_ci == pytest.approx((0.0020023, 0.0580705), abs=1e-7)  # Newcombe, same run


def test_equal_proportions_give_p_one_and_symmetric_ci():
    r = TwoProportionZTest(P(500, 50), P(500, 50)).compute_result()
    assert r.p_value == pytest.approx(1.0) and r.effect == 0
    assert r.effect_ci[0] == pytest.approx(-r.effect_ci[1])


def test_zero_baseline_difference_is_clear():
    # 0/1000 vs 12/1000: the difference 0.012 stays, and is far from 0 (no lift: TestTwoProportionZTest)
    r = TwoProportionZTest(P(1000, 0), P(1000, 12)).compute_result()
    assert r.p_value < 0.001 and r.effect == pytest.approx(0.012)
