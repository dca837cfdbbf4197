"""The Bayesian view: closed forms by hand and degenerate inputs (gbstats agreement: test_gbstats_crosscheck.py)."""

from __future__ import annotations

import math

import pytest
from scipy.stats import norm

from experiments.bayesian import GaussianPrior, bayesian_effect
from experiments.proportions import TwoProportionZTest
from experiments.result import ErrorCode
from experiments.stats import ProportionStatistic as P


def test_flat_prior_posterior_is_the_delta_method_likelihood():
    est = TwoProportionZTest(P(1000, 100), P(1000, 130)).estimate()
    r = bayesian_effect(est)
    sd = math.sqrt(est.lift_variance)
    assert r.expected == pytest.approx(0.3, rel=1e-12)
    assert r.chance_to_win == pytest.approx(norm.cdf(0.3 / sd), rel=1e-12)
    assert r.ci == pytest.approx((0.3 - 1.959963984540054 * sd, 0.3 + 1.959963984540054 * sd), rel=1e-12)
    # E[max(0, -X)] for X ~ N(mu, s^2) = s phi(mu/s) - mu Phi(-mu/s) (the normal partial expectation)
    z = 0.3 / sd
    assert r.expected_loss == pytest.approx(sd * norm.pdf(z) - 0.3 * norm.cdf(-z), rel=1e-9)
    assert r.control_loss - r.expected_loss == pytest.approx(0.3, rel=1e-9)  # E[X+] - E[X-] = E[X]


def test_a_proper_prior_shrinks_towards_its_mean():
    est = TwoProportionZTest(P(1000, 100), P(1000, 130)).estimate()
    flat, proper = bayesian_effect(est), bayesian_effect(est, prior=GaussianPrior(0.0, 0.01, proper=True))
    assert 0 < proper.expected < flat.expected and proper.ci[1] - proper.ci[0] < flat.ci[1] - flat.ci[0]


@pytest.mark.parametrize(
    "estimate, relative, code",
    [
        (None, True, ErrorCode.INVALID_INPUT),
        (TwoProportionZTest(P(3000, 0), P(3000, 40)).estimate(), True, ErrorCode.BASELINE_ZERO),
    ],
)
def test_degenerate_inputs_are_neutral(estimate, relative, code):
    r = bayesian_effect(estimate, relative=relative)
    assert (r.error, r.chance_to_win, r.expected, r.ci) == (code, 0.5, 0.0, (0.0, 0.0))


def test_zero_baseline_still_has_an_absolute_view():
    r = bayesian_effect(TwoProportionZTest(P(3000, 0), P(3000, 40)).estimate(), relative=False)
    assert r.error is None and r.chance_to_win > 0.999 and r.ci[0] > 0
