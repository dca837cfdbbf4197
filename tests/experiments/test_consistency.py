"""One verdict, one interval: p < alpha <=> the difference CI excludes 0 <=> the lift CI excludes 0 (issue #17).

A property test over seeded random inputs for every test class and its sequential view. Before #17 the
proportions test mixed a pooled z p-value, a Newcombe difference CI and a log-ratio lift CI, and the means
and ratio tests a delta-method lift CI: the borderline cases in test_proportions.py disagreed.
"""

from __future__ import annotations

import numpy as np
import pytest

from experiments.means import WelchTTest
from experiments.proportions import TwoProportionZTest
from experiments.ratio import DeltaMethodRatioTest
from experiments.result import TestResult
from experiments.sequential import SequentialTest
from experiments.stats import ProportionStatistic, RatioStatistic, SampleMeanStatistic

ALPHA = 0.05
CASES = 400  # per test class; the whole module runs in ~1 s
BOUNDARY = 1e-9  # |p - alpha| closer than this is a tie that floating point may break either way


def _proportions(rng: np.random.Generator) -> TwoProportionZTest:
    n_c, n_t = rng.integers(50, 5000, size=2)
    p = rng.uniform(0.01, 0.6)
    c = rng.binomial(n_c, p)
    t = rng.binomial(n_t, min(p * rng.uniform(0.6, 1.5), 1.0))
    return TwoProportionZTest(ProportionStatistic(int(n_c), int(c)), ProportionStatistic(int(n_t), int(t)), ALPHA)


def _mean_stat(x: np.ndarray) -> SampleMeanStatistic:
    return SampleMeanStatistic(len(x), float(x.sum()), float((x * x).sum()))


def _means(rng: np.random.Generator) -> WelchTTest:
    n_c, n_t = rng.integers(30, 800, size=2)
    scale = rng.uniform(0.2, 3.0)
    c = rng.lognormal(0, scale, n_c) * (rng.random(n_c) < 0.3)
    t = rng.lognormal(rng.normal(0, 0.6), scale, n_t) * (rng.random(n_t) < 0.3)
    return WelchTTest(_mean_stat(c), _mean_stat(t), ALPHA)


def _ratio_stat(rng: np.random.Generator, n: int, ctr: float) -> RatioStatistic:
    x = (1 + rng.poisson(3, n)).astype(float)
    y = rng.binomial(x.astype(int), rng.beta(ctr * 2, (1 - ctr) * 2, n)).astype(float)
    return RatioStatistic(_mean_stat(y), _mean_stat(x), float((x * y).sum()))


def _ratio(rng: np.random.Generator) -> DeltaMethodRatioTest:
    n_c, n_t = rng.integers(30, 1500, size=2)
    ctr = rng.uniform(0.02, 0.3)
    return DeltaMethodRatioTest(
        _ratio_stat(rng, int(n_c), ctr), _ratio_stat(rng, int(n_t), ctr * rng.uniform(0.7, 1.4)), ALPHA
    )


MAKERS = {"proportions": _proportions, "means": _means, "ratio": _ratio}


def _check(r: TestResult) -> bool:
    """Asserts the property on a decisive result; returns whether it was significant."""
    significant = r.p_value < ALPHA
    excludes = not r.effect_ci[0] <= 0.0 <= r.effect_ci[1]
    assert excludes is significant, (r.p_value, r.effect_ci)
    assert r.effect_ci[0] <= r.effect <= r.effect_ci[1]
    if r.ok:  # a lift exists (no note about it)
        assert (not r.lift_ci[0] <= 0.0 <= r.lift_ci[1]) is significant, (r.p_value, r.lift_ci)
        assert r.lift_ci[0] <= r.lift <= r.lift_ci[1], (r.lift, r.lift_ci)
    return significant


@pytest.mark.parametrize("sequential", [False, True], ids=["fixed", "sequential"])
@pytest.mark.parametrize("kind", list(MAKERS))
def test_p_value_difference_ci_and_lift_ci_agree(kind, sequential):
    rng = np.random.default_rng(17)
    verdicts = []
    for _ in range(CASES):
        test = MAKERS[kind](rng)
        r = (SequentialTest(test, 5000) if sequential else test).compute_result()
        if not r.decisive or abs(r.p_value - ALPHA) < BOUNDARY:
            continue
        verdicts.append(_check(r))
    # the draws straddle the boundary, so both verdicts occur many times (the property is exercised)
    hits = sum(verdicts)
    assert len(verdicts) > 0.8 * CASES and min(hits, len(verdicts) - hits) >= 10, (len(verdicts), hits)
