"""Always-valid confidence sequences: formula by hand, properties, degenerate inputs."""

from __future__ import annotations

import math

import pytest

from experiments.means import WelchTTest
from experiments.proportions import TwoProportionZTest
from experiments.result import ErrorCode, Estimate
from experiments.sequential import SequentialTest, always_valid_p_value, mixture_rho, sequence_halfwidth
from experiments.stats import ProportionStatistic as P
from experiments.stats import SampleMeanStatistic
from tests.experiments.stat_cases import TwoArmTestCases


class TestSequentialTest(TwoArmTestCases):
    """The shared properties (stat_cases.py) on the confidence sequence around the proportions and Welch tests."""

    TUNING_N = 40_000
    METHOD = "sequential two-proportion z-test (unpooled) (normal-mixture CS, tuning_n=40000)"
    SIGNIFICANT = (P(20_000, 1000), P(20_000, 1300))  # always-valid p = 2.9e-8
    NOT_SIGNIFICANT = (P(20_000, 1000), P(20_000, 1100))  # fixed-horizon p = 0.025, always-valid p = 0.32
    ZERO_BASELINE = (P(20_000, 0), P(20_000, 40))
    CERTAIN_DIFFERENCE = (SampleMeanStatistic(40, 80, 160), SampleMeanStatistic(40, 120, 360))  # 2 vs 3 per user
    DEGENERATE = (  # the wrapped test's error passes through
        (P(0, 0), P(10, 1), ErrorCode.ZERO_USERS),
        (SampleMeanStatistic(10, 20, 40), SampleMeanStatistic(10, 20, 40), ErrorCode.ZERO_VARIANCE),
    )

    def make(self, control, treatment):
        fixed = WelchTTest if isinstance(control, SampleMeanStatistic) else TwoProportionZTest
        return SequentialTest(fixed(control, treatment, self.ALPHA), self.TUNING_N)


def test_rho_by_hand():
    # rho^2 = (-2 ln 0.05 + ln(-2 ln 0.05 + 1)) / 5000 = (5.991465 + 1.944694) / 5000 = 0.0015872
    assert mixture_rho(0.05, 5000) ** 2 == pytest.approx(0.00158723, abs=1e-8)


def test_p_value_and_halfwidth_formulas_agree_at_alpha():
    # The CS at level alpha excludes 0 exactly when the always-valid p-value is below alpha; p = alpha at the edge.
    for effect in (0.001, 0.01, 0.02, 0.03, 0.05):
        hw = sequence_halfwidth(1e-4, 20_000, 0.05, 5000)
        p = always_valid_p_value(effect, 1e-4, 20_000, 0.05, 5000)
        assert (abs(effect) > hw) == (p < 0.05)
    hw = sequence_halfwidth(1e-4, 20_000, 0.05, 5000)
    assert always_valid_p_value(hw, 1e-4, 20_000, 0.05, 5000) == pytest.approx(0.05, rel=1e-9)


def test_sequential_is_wider_than_fixed_horizon():
    test = TwoProportionZTest(P(20_000, 1000), P(20_000, 1100))
    seq = SequentialTest(test, 40_000).compute_result()
    fixed = test.compute_result()
    assert seq.effect == fixed.effect
    assert seq.effect_ci[1] - seq.effect_ci[0] > fixed.effect_ci[1] - fixed.effect_ci[0]
    assert seq.p_value > fixed.p_value
    assert "tuning_n=40000" in seq.method


def test_tightest_near_the_tuning_parameter():
    # Half-width relative to the fixed z half-width (1.96 sd) is smallest near n = tuning_n.
    ratios = {
        n: sequence_halfwidth(1.0 / n, n, 0.05, 10_000) / (1.959964 * math.sqrt(1.0 / n))
        for n in (1000, 10_000, 100_000)
    }
    assert ratios[10_000] < ratios[1000] and ratios[10_000] < ratios[100_000]


def test_nan_from_the_wrapped_test_becomes_an_error_code():
    # Issue #17, defect 5: the wrapper passed NaN through. An estimate with NaN gives invalid_input, numbers neutral.
    class Broken:
        alpha, METHOD = 0.05, "broken"

        def estimate(self):
            return Estimate(0.1, float("nan"), float("nan"), 1e-4, 0.0, 1e-2, 1000, True, 1e-5, 1e-5)

        def compute_result(self):
            raise AssertionError("not needed")

    r = SequentialTest(Broken(), 5000).compute_result()
    assert r.error == ErrorCode.INVALID_INPUT and r.p_value == 1.0
    assert all(math.isfinite(v) for v in (r.effect, *r.effect_ci, r.lift, *r.lift_ci, r.treatment_value))
