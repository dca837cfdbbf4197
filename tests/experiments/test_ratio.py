"""CTR with the user as unit: delta-method variance vs an independent linearisation on raw data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from experiments.ratio import DeltaMethodRatioTest
from experiments.result import ErrorCode
from experiments.stats import RatioStatistic, SampleMeanStatistic
from tests.experiments.stat_cases import TwoArmTestCases


def users(seed: int, n: int, ctr: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = 1 + rng.poisson(4, n)
    y = rng.binomial(x, rng.beta(ctr * 2, (1 - ctr) * 2, n))
    return x.astype(float), y.astype(float)


def ratio_stat(x: np.ndarray, y: np.ndarray) -> RatioStatistic:
    return RatioStatistic(
        SampleMeanStatistic(len(y), y.sum(), (y * y).sum()),
        SampleMeanStatistic(len(x), x.sum(), (x * x).sum()),
        float((x * y).sum()),
    )


def linearised_variance(x: np.ndarray, y: np.ndarray) -> float:
    # Deng et al. (2018) eq. 4 written as a linearisation: Var(ybar/xbar) ~ Var(y - r x) / (n xbar^2).
    r = y.sum() / x.sum()
    return np.var(y - r * x, ddof=1) / (len(x) * x.mean() ** 2)


CONSTANT = RatioStatistic(SampleMeanStatistic(5, 5, 5), SampleMeanStatistic(5, 10, 20), 10)  # 2 exposures, 1 click
OK = ratio_stat(*users(5, 100, 0.1))  # 100 ordinary users, the other arm of the degenerate cases


class TestDeltaMethodRatioTest(TwoArmTestCases):
    """The shared properties (stat_cases.py) on the delta-method ratio test."""

    METHOD = "delta-method z-test (ratio)"
    SIGNIFICANT = (ratio_stat(*users(2, 3000, 0.10)), ratio_stat(*users(3, 3000, 0.11)))  # p = 0.0016
    NOT_SIGNIFICANT = (ratio_stat(*users(2, 3000, 0.10)), ratio_stat(*users(3, 3000, 0.10)))  # p = 0.41
    # no control user ever clicks: control CTR 0 with zero variance, the treatment's variance carries the test
    ZERO_BASELINE = (ratio_stat(users(6, 100, 0.1)[0], np.zeros(100)), OK)
    DEGENERATE = (
        (RatioStatistic(SampleMeanStatistic(0, 0, 0), SampleMeanStatistic(0, 0, 0), 0), OK, ErrorCode.ZERO_USERS),
        (RatioStatistic(SampleMeanStatistic(1, 1, 1), SampleMeanStatistic(1, 2, 4), 2), OK, ErrorCode.TOO_FEW_USERS),
        (
            RatioStatistic(SampleMeanStatistic(5, 0, 0), SampleMeanStatistic(5, 0, 0), 0),
            OK,  # no exposures
            ErrorCode.ZERO_DENOMINATOR,
        ),
    )
    # every user 4 exposures: 1 click (CTR 0.25) vs 2 clicks (0.5), zero variance in both arms
    CERTAIN_DIFFERENCE = (
        RatioStatistic(SampleMeanStatistic(40, 40, 40), SampleMeanStatistic(40, 160, 640), 160),
        RatioStatistic(SampleMeanStatistic(40, 80, 160), SampleMeanStatistic(40, 160, 640), 320),
    )

    def make(self, control, treatment):
        return DeltaMethodRatioTest(control, treatment, self.ALPHA)


def test_delta_variance_equals_linearisation_on_raw_data():
    x, y = users(1, 3000, 0.1)
    assert ratio_stat(x, y).variance_of_ratio == pytest.approx(linearised_variance(x, y), rel=1e-10)


def test_z_test_against_independent_computation():
    (xc, yc), (xt, yt) = users(2, 3000, 0.10), users(3, 3000, 0.11)
    r = DeltaMethodRatioTest(ratio_stat(xc, yc), ratio_stat(xt, yt)).compute_result()
    diff = yt.sum() / xt.sum() - yc.sum() / xc.sum()
    se = np.sqrt(linearised_variance(xc, yc) + linearised_variance(xt, yt))
    assert r.effect == pytest.approx(diff, rel=1e-12)
    assert r.p_value == pytest.approx(2 * norm.sf(abs(diff / se)), rel=1e-9)
    assert r.effect_ci == pytest.approx((diff - 1.959963984540054 * se, diff + 1.959963984540054 * se), rel=1e-9)


def test_delta_method_ci_is_wider_than_impression_level_when_users_differ():
    # Heterogeneous users make impressions of one user correlated: the honest CI is wider.
    x, y = users(4, 3000, 0.1)
    r = y.sum() / x.sum()
    impressions_var = r * (1 - r) / x.sum()
    assert ratio_stat(x, y).variance_of_ratio > 1.5 * impressions_var


def test_constant_arms_keep_their_ratio():
    # every user: 2 exposures, 1 click -> no test (zero variance), but the arms still show CTR 0.5
    r = DeltaMethodRatioTest(CONSTANT, CONSTANT).compute_result()
    assert r.error == ErrorCode.ZERO_VARIANCE and r.p_value == 1.0 and r.control_value == 0.5 and r.effect == 0


def test_five_users_per_arm_are_too_small():
    # Issue #17, defect 5: CTR used z at any n (p = 0.0024 at 5 users per arm); now too_small, no verdict.
    c = ratio_stat(*users(8, 5, 0.05))
    t = ratio_stat(*users(9, 5, 0.4))
    r = DeltaMethodRatioTest(c, t).compute_result()
    assert r.error == ErrorCode.TOO_SMALL and not r.decisive and r.effect != 0
