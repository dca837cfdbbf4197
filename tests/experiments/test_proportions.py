"""Two-proportion z-test: reference values (textbook and one-off statsmodels runs)."""

from __future__ import annotations

import math

import pytest
from scipy.stats import fisher_exact, norm
from statsmodels.stats import proportion as smp

from experiments.proportions import TwoProportionZTest
from experiments.result import ErrorCode
from experiments.stats import ProportionStatistic as P
from tests.experiments.stat_cases import TwoArmTestCases


class TestTwoProportionZTest(TwoArmTestCases):
    """The shared properties (stat_cases.py) on the two-proportion z-test."""

    METHOD = "two-proportion z-test (unpooled)"
    SIGNIFICANT = (P(1000, 100), P(1000, 130))  # p = 0.035 (below)
    NOT_SIGNIFICANT = (P(1000, 100), P(1000, 110))  # p = 0.47
    ZERO_BASELINE = (P(1000, 0), P(1000, 12))
    CERTAIN_DIFFERENCE = (P(100, 100), P(100, 0))  # everyone vs no one
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


def test_z_and_p_match_the_unpooled_formula_by_hand():
    # 100/1000 vs 130/1000. By hand: se = sqrt(0.1 * 0.9 / 1000 + 0.13 * 0.87 / 1000) = 0.0142758,
    # z = 0.03 / se = 2.101458, p = 2 (1 - Phi(z)) = 0.035604.
    r = TwoProportionZTest(P(1000, 100), P(1000, 130)).compute_result()
    se = math.sqrt(0.1 * 0.9 / 1000 + 0.13 * 0.87 / 1000)
    assert r.statistic == pytest.approx(0.03 / se, rel=1e-12)
    assert r.p_value == pytest.approx(2 * norm.sf(0.03 / se), rel=1e-12)
    assert r.effect_ci == pytest.approx((0.03 - 1.959963984540054 * se, 0.03 + 1.959963984540054 * se), rel=1e-12)
    assert r.effect == pytest.approx(0.03) and r.lift == pytest.approx(0.3)


def test_matches_statsmodels_wald_test_and_interval():
    # The closed form is statsmodels' Wald test and interval for the difference.
    r = TwoProportionZTest(P(4000, 200), P(4000, 240)).compute_result()
    stat = smp.test_proportions_2indep(240, 4000, 200, 4000, method="wald", compare="diff")
    assert (r.statistic, r.p_value) == pytest.approx((stat.statistic, stat.pvalue), rel=1e-12)
    ci = smp.confint_proportions_2indep(240, 4000, 200, 4000, method="wald", compare="diff")
    assert r.effect_ci == pytest.approx(ci, rel=1e-12)


@pytest.mark.parametrize(
    "control, treatment",
    [
        (P(4000, 200), P(4000, 240)),  # was p = 0.0498 "significant" with a difference CI of [-1.8e-6, 0.020]
        (P(1000, 50), P(1000, 71)),  # was p = 0.0489 with a lift CI of [-0.17 %, +100.8 %]
    ],
)
def test_issue_17_borderline_cases_agree_with_themselves(control, treatment):
    r = TwoProportionZTest(control, treatment).compute_result()
    significant = r.p_value < 0.05
    assert (r.effect_ci[0] > 0) is significant and (r.lift_ci[0] > 0) is significant
    assert r.effect_ci[0] < r.effect < r.effect_ci[1] and r.lift_ci[0] < r.lift < r.lift_ci[1]


def test_five_of_100_against_none_keeps_the_lift_inside_its_ci():
    # Issue #17: 5/100 vs 0/100 showed a lift of -100 % outside its own CI [-99.49 %, +62.2 %]. Expected counts
    # of 2.5 are below Cochran's 5: Fisher's exact test, too_small, and the estimate inside its intervals.
    r = TwoProportionZTest(P(100, 5), P(100, 0)).compute_result()
    assert r.error == ErrorCode.TOO_SMALL and not r.decisive and r.method == "Fisher exact test (too small for z)"
    assert r.p_value == pytest.approx(fisher_exact([[0, 100], [5, 95]]).pvalue, rel=1e-12)
    assert r.p_value == pytest.approx(0.0594, abs=1e-4)  # scipy 1.17 fisher_exact, run once
    assert r.effect == pytest.approx(-0.05) and r.effect_ci[0] <= r.effect <= r.effect_ci[1]
    assert r.lift == -1.0 and r.lift_ci[0] <= r.lift <= r.lift_ci[1]


def test_zero_control_against_40_of_3000_is_significant():
    # Issue #17: reported "not significant" at p = 2.2e-10. Now: difference and p decide, the lift is undefined.
    r = TwoProportionZTest(P(3000, 0), P(3000, 40)).compute_result()
    assert r.error == ErrorCode.BASELINE_ZERO and r.decisive
    assert r.p_value < 1e-9 and r.effect_ci[0] > 0


def test_equal_proportions_give_p_one_and_symmetric_ci():
    r = TwoProportionZTest(P(500, 50), P(500, 50)).compute_result()
    assert r.p_value == pytest.approx(1.0) and r.effect == 0
    assert r.effect_ci[0] == pytest.approx(-r.effect_ci[1])


def test_zero_baseline_difference_is_clear():
    # 0/1000 vs 12/1000: the difference 0.012 stays, and is far from 0 (no lift: TestTwoProportionZTest)
    r = TwoProportionZTest(P(1000, 0), P(1000, 12)).compute_result()
    assert r.p_value < 0.001 and r.effect == pytest.approx(0.012)
