"""Cross-check with a peer: GrowthBook's gbstats frequentist engine on the same inputs.

Tolerances, and why they are what they are:
- conversion: we use the pooled z-test + Newcombe CI (statsmodels), gbstats an unpooled
  Welch t-test; they agree to 2e-4 in p and CI bounds at n = 1,000 per arm, 2e-5 at 50,000;
- revenue (Welch), CUPED, ratio (delta method), sequential and SRM: the same formulas, so
  they agree to 1e-9 (floating point), except the ratio test (z vs gbstats' t: 1e-5).
"""

from __future__ import annotations

import numpy as np
import pytest
from gbstats.frequentist.tests import FrequentistConfig, SequentialConfig, SequentialTwoSidedTTest, TwoSidedTTest
from gbstats.models import statistics as gb
from gbstats.utils import check_srm as gb_check_srm

from experiments.cuped import CupedTTest
from experiments.means import WelchTTest
from experiments.proportions import TwoProportionZTest
from experiments.ratio import DeltaMethodRatioTest
from experiments.sequential import SequentialTest
from experiments.srm import check_srm
from experiments.stats import (
    ProportionStatistic,
    RatioStatistic,
    RegressionAdjustedStatistic,
    SampleMeanStatistic,
)

ABSOLUTE = FrequentistConfig(difference_type="absolute")
RELATIVE = FrequentistConfig(difference_type="relative")


@pytest.mark.parametrize("n, a, b, tol", [(1000, 100, 130, 2e-4), (50_000, 2500, 2650, 2e-5)])
def test_conversion_agrees_with_gbstats(n, a, b, tol):
    ours = TwoProportionZTest(ProportionStatistic(n, a), ProportionStatistic(n, b)).compute_result()
    theirs = TwoSidedTTest(gb.ProportionStatistic(n=n, sum=a), gb.ProportionStatistic(n=n, sum=b),
                           ABSOLUTE).compute_result()
    assert ours.effect == pytest.approx(theirs.expected, abs=1e-12)
    assert ours.p_value == pytest.approx(theirs.p_value, abs=tol)
    assert ours.effect_ci == pytest.approx(tuple(theirs.ci), abs=tol)


def revenue(seed: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.where(rng.random(n) < 0.05, rng.lognormal(3, 1, n), 0.0)


def test_revenue_agrees_with_gbstats():
    c, t = revenue(1, 4000), revenue(2, 4200)
    sc = SampleMeanStatistic(len(c), c.sum(), (c * c).sum())
    st = SampleMeanStatistic(len(t), t.sum(), (t * t).sum())
    ours = WelchTTest(sc, st).compute_result()
    gc = gb.SampleMeanStatistic(n=sc.n, sum=sc.sum, sum_squares=sc.sum_squares)
    gt = gb.SampleMeanStatistic(n=st.n, sum=st.sum, sum_squares=st.sum_squares)
    absolute = TwoSidedTTest(gc, gt, ABSOLUTE).compute_result()
    relative = TwoSidedTTest(gc, gt, RELATIVE).compute_result()
    assert ours.p_value == pytest.approx(absolute.p_value, abs=1e-9)
    assert ours.effect_ci == pytest.approx(tuple(absolute.ci), abs=1e-9)
    assert ours.lift == pytest.approx(relative.expected, abs=1e-12)
    assert ours.lift_ci == pytest.approx(tuple(relative.ci), abs=1e-9)


def test_cuped_agrees_with_gbstats_regression_adjustment():
    rng = np.random.default_rng(7)
    pre = [rng.gamma(2, 5, n) for n in (3000, 3100)]
    post = [0.7 * x + rng.normal(0, 3, len(x)) for x in pre]
    post[1] = post[1] + 0.3
    ours, theirs = [], []
    for x, y in zip(pre, post):
        ours.append(RegressionAdjustedStatistic(SampleMeanStatistic(len(y), y.sum(), (y * y).sum()),
                                                SampleMeanStatistic(len(x), x.sum(), (x * x).sum()),
                                                float((x * y).sum())))
        theirs.append(gb.RegressionAdjustedStatistic(
            n=len(y), post_statistic=gb.SampleMeanStatistic(n=len(y), sum=y.sum(), sum_squares=(y * y).sum()),
            pre_statistic=gb.SampleMeanStatistic(n=len(x), sum=x.sum(), sum_squares=(x * x).sum()),
            post_pre_sum_of_products=float((x * y).sum()), theta=0))
    r = CupedTTest(*ours).compute_result()
    g = TwoSidedTTest(*theirs, ABSOLUTE).compute_result()
    assert r.effect == pytest.approx(g.expected, abs=1e-9)
    assert r.p_value == pytest.approx(g.p_value, abs=1e-9)
    assert r.effect_ci == pytest.approx(tuple(g.ci), abs=1e-9)


def test_ratio_agrees_with_gbstats():
    rng = np.random.default_rng(3)
    ours, theirs = [], []
    for n, ctr in ((5000, 0.10), (5000, 0.106)):
        x = (1 + rng.poisson(4, n)).astype(float)
        y = rng.binomial(x.astype(int), rng.beta(ctr * 2, (1 - ctr) * 2, n)).astype(float)
        ours.append(RatioStatistic(SampleMeanStatistic(n, y.sum(), (y * y).sum()),
                                   SampleMeanStatistic(n, x.sum(), (x * x).sum()), float((x * y).sum())))
        theirs.append(gb.RatioStatistic(
            n=n, m_statistic=gb.SampleMeanStatistic(n=n, sum=y.sum(), sum_squares=(y * y).sum()),
            d_statistic=gb.SampleMeanStatistic(n=n, sum=x.sum(), sum_squares=(x * x).sum()),
            m_d_sum_of_products=float((x * y).sum())))
    r = DeltaMethodRatioTest(*ours).compute_result()
    g = TwoSidedTTest(*theirs, ABSOLUTE).compute_result()
    assert r.effect == pytest.approx(g.expected, abs=1e-12)
    assert r.p_value == pytest.approx(g.p_value, abs=1e-5)  # z (ours) vs t with ~10^4 dof (theirs)
    assert r.effect_ci == pytest.approx(tuple(g.ci), abs=1e-5)


@pytest.mark.parametrize("tuning", [5000, 40_000])
def test_sequential_agrees_with_gbstats(tuning):
    c, t = ProportionStatistic(6000, 600), ProportionStatistic(6100, 700)
    ours = SequentialTest(TwoProportionZTest(c, t), tuning).compute_result()
    theirs = SequentialTwoSidedTTest(
        gb.ProportionStatistic(n=c.n, sum=c.successes), gb.ProportionStatistic(n=t.n, sum=t.successes),
        SequentialConfig(difference_type="absolute", sequential_tuning_parameter=tuning)).compute_result()
    assert ours.effect_ci == pytest.approx(tuple(theirs.ci), abs=1e-9)
    assert ours.p_value == pytest.approx(theirs.p_value, abs=1e-9)


@pytest.mark.parametrize("users, weights", [
    ([1000, 1100], [0.5, 0.5]), ([5000, 5400], [0.5, 0.5]), ([980, 2050, 2970], [0.2, 0.3, 0.5]),
    ([100, 900], [0.1, 0.9]),
])
def test_srm_agrees_with_gbstats(users, weights):
    assert check_srm(users, weights).p_value == pytest.approx(gb_check_srm(users, weights), abs=1e-12)
