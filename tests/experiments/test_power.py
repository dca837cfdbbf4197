"""Power: MDE and sample size against closed-form textbook formulas."""

from __future__ import annotations

import math

import pytest
from scipy.stats import norm

from experiments.power import days_remaining, mean_power, proportion_power, proportion_test_power
from experiments.result import ErrorCode

Z = norm.ppf(0.975) + norm.ppf(0.8)  # 1.959964 + 0.841621 = 2.801585


def test_sample_size_for_10_to_12_percent():
    # Cohen's h = 2 asin(sqrt(.12)) - 2 asin(sqrt(.10)) = 0.0639821; n per arm = 2 (Z / h)^2 = 3834.6
    # (Fleiss' normal approximation without continuity correction gives 3841 for the same design).
    h = 2 * math.asin(math.sqrt(0.12)) - 2 * math.asin(math.sqrt(0.10))
    r = proportion_power(0.10, 1000, 1000, target_relative_mde=0.2)
    assert r.required_n_control == math.ceil(2 * (Z / h) ** 2) == 3835


def test_mde_inverts_sample_size():
    r = proportion_power(0.10, 3835, 3835, target_relative_mde=0.2)
    assert r.mde_relative == pytest.approx(0.2, abs=1e-3)
    assert r.days_remaining == 0.0


def test_mean_mde_closed_form():
    # d = Z sqrt(1/n1 + 1/n2) = 2.801585 * sqrt(2/1000) = 0.125291 standard deviations.
    r = mean_power(10.0, 20.0, 1000, 1000)
    assert r.mde_absolute == pytest.approx(20 * Z * math.sqrt(2 / 1000), rel=1e-4)
    assert r.mde_relative == pytest.approx(r.mde_absolute / 10)


def test_unequal_split_needs_more_control_users_than_equal():
    equal = proportion_power(0.05, 1000, 1000).required_n_control
    skewed = proportion_power(0.05, 1000, 250).required_n_control  # ratio 0.25
    assert skewed > 2 * equal


def test_days_remaining():
    assert days_remaining(1000, 400, 100) == pytest.approx(6.0)
    assert days_remaining(1000, 1200, 100) == 0.0
    assert days_remaining(1000, 400, 0) is None
    r = proportion_power(0.10, 1000, 1000, target_relative_mde=0.2, control_users_per_day=200)
    assert r.days_remaining == pytest.approx((3835 - 1000) / 200)


def test_theoretical_power_at_the_planned_size_is_80_percent():
    assert proportion_test_power(0.10, 0.12, 3835) == pytest.approx(0.8, abs=1e-3)


@pytest.mark.parametrize(
    "rate, n, code",
    [(0.0, 1000, ErrorCode.ZERO_VARIANCE), (1.0, 1000, ErrorCode.ALL_CONVERSIONS), (0.1, 1, ErrorCode.TOO_FEW_USERS)],
)
def test_degenerate_power_inputs(rate, n, code):
    r = proportion_power(rate, n, n)
    assert r.error == code and r.mde_absolute == 0.0 and r.required_n_control == 0
    assert mean_power(1.0, 0.0, 100, 100).error == ErrorCode.ZERO_VARIANCE
