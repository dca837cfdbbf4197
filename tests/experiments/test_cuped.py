"""CUPED: adjusted test vs a Welch test on per-user adjusted values computed from raw data."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from experiments.cuped import CupedTTest, cuped_or_welch
from experiments.means import WelchTTest
from experiments.result import ErrorCode
from experiments.stats import RegressionAdjustedStatistic, SampleMeanStatistic


def arm(seed: int, n: int, lift: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    pre = rng.gamma(2.0, 5.0, n)  # pre-period revenue
    post = 0.8 * pre + rng.normal(0, 4, n) + lift
    return pre, post


def ra(pre: np.ndarray, post: np.ndarray) -> RegressionAdjustedStatistic:
    return RegressionAdjustedStatistic(
        SampleMeanStatistic(len(post), post.sum(), (post**2).sum()),
        SampleMeanStatistic(len(pre), pre.sum(), (pre**2).sum()),
        float((pre * post).sum()),
    )


def test_matches_welch_on_adjusted_raw_values():
    (xc, yc), (xt, yt) = arm(1, 800, 0.0), arm(2, 900, 0.5)
    x, y = np.concatenate([xc, xt]), np.concatenate([yc, yt])
    theta = np.cov(y, x, ddof=1)[0, 1] / np.var(x, ddof=1)
    adj_c, adj_t = yc - theta * (xc - x.mean()), yt - theta * (xt - x.mean())
    test = CupedTTest(ra(xc, yc), ra(xt, yt))
    r = test.compute_result()
    t, p, _ = CompareMeans(DescrStatsW(adj_t), DescrStatsW(adj_c)).ttest_ind(usevar="unequal")
    assert test.theta == pytest.approx(theta, rel=1e-9)
    assert r.effect == pytest.approx(adj_t.mean() - adj_c.mean(), rel=1e-9)
    assert (r.statistic, r.p_value) == pytest.approx((t, p), rel=1e-8)


def test_variance_reduction_is_about_rho_squared():
    (xc, yc), (xt, yt) = arm(3, 5000, 0.0), arm(4, 5000, 0.0)
    test = CupedTTest(ra(xc, yc), ra(xt, yt))
    rho = np.corrcoef(np.concatenate([xc, xt]), np.concatenate([yc, yt]))[0, 1]
    assert test.variance_reduction == pytest.approx(rho**2, abs=0.01)
    assert test.variance_reduction > 0.5


def test_without_pre_period_falls_back_to_welch():
    (_, yc), (_, yt) = arm(5, 300, 0.0), arm(6, 300, 1.0)
    zeros = np.zeros(300)
    c, t = ra(zeros, yc), ra(zeros, yt)
    assert CupedTTest(c, t).compute_result().error == ErrorCode.NO_PRE_PERIOD
    fallback = cuped_or_welch(c, t)
    assert isinstance(fallback, WelchTTest)
    assert fallback.p_value == WelchTTest(c.post, t.post).p_value


def test_zero_users():
    empty = RegressionAdjustedStatistic(SampleMeanStatistic(0, 0, 0), SampleMeanStatistic(0, 0, 0), 0)
    xc, yc = arm(7, 50, 0)
    assert CupedTTest(empty, ra(xc, yc)).compute_result().error == ErrorCode.ZERO_USERS
