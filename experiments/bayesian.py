"""The Bayesian view beside the frequentist one: chance to beat control, expected loss, credible interval.

GrowthBook's effect model (gbstats `EffectBayesianABTest`): the data give a normal likelihood for the
relative lift (delta-method variance) or the absolute difference; with a Gaussian prior N(m, v) on that
effect (improper/flat by default, as gbstats) the posterior is normal with precision 1/Var + 1/v and mean
(est/Var + m/v) / precision. From the posterior N(mu, s^2):
- chance to beat control = P(effect > 0) = Phi(mu / s);
- expected loss of shipping the treatment = E[max(0, -effect)] and of keeping the control
  E[max(0, effect)] (gbstats' `risk`), from the truncated-normal means (scipy `truncnorm`);
- credible interval = the (alpha/2, 1 - alpha/2) posterior quantiles (scipy `norm.ppf`).
The inputs are the same `Estimate` every frequentist test builds, so proportions, means, ratios and CUPED
all get this view.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from scipy import stats

from experiments.result import ErrorCode, Estimate, all_finite


@dataclass(frozen=True)
class GaussianPrior:
    """A normal prior on the effect (relative lift or difference); `proper=False` is a flat prior."""

    mean: float = 0.0
    variance: float = 1.0
    proper: bool = False


@dataclass(frozen=True)
class BayesianResult:
    """Posterior summaries of one treatment vs control; neutral (0.5, zeros) with an error code."""

    relative: bool
    expected: float  # posterior mean of the lift (relative) or the difference
    ci: tuple[float, float]  # credible interval at 1 - alpha
    chance_to_win: float  # P(treatment better than control)
    expected_loss: float  # E[loss] if the treatment is shipped: E[max(0, -effect)]
    control_loss: float  # E[loss] if the control is kept: E[max(0, effect)]
    error: ErrorCode | None = None

    def to_dict(self) -> dict:
        """A JSON-serialisable dict (the error code as its string value)."""
        d = asdict(self)
        d["ci"] = list(self.ci)
        d["error"] = self.error.value if self.error else None
        return d


def _neutral(relative: bool, error: ErrorCode) -> BayesianResult:
    return BayesianResult(relative, 0.0, (0.0, 0.0), 0.5, 0.0, 0.0, error)


def _truncated_mean(mu: float, sigma: float, lower: float, upper: float) -> float:
    a, b = (lower - mu) / sigma, (upper - mu) / sigma
    return float(stats.truncnorm.mean(a, b, loc=mu, scale=sigma))


def bayesian_effect(
    estimate: Estimate | None, alpha: float = 0.05, relative: bool = True, prior: GaussianPrior = GaussianPrior()
) -> BayesianResult:
    """The posterior of the lift (or difference) from a test's `Estimate`, as gbstats `EffectBayesianABTest`."""
    if estimate is None:
        return _neutral(relative, ErrorCode.INVALID_INPUT)
    if relative and not estimate.lift_defined:
        return _neutral(relative, ErrorCode.BASELINE_ZERO)
    data_mean = estimate.lift if relative else estimate.effect
    data_var = estimate.lift_variance if relative else estimate.effect_variance
    if not all_finite(data_mean, data_var, prior.mean, prior.variance):
        return _neutral(relative, ErrorCode.INVALID_INPUT)
    if data_var <= 0:
        return _neutral(relative, ErrorCode.ZERO_VARIANCE)
    precision = 1.0 / data_var + (1.0 / prior.variance if prior.proper else 0.0)
    mu = (data_mean / data_var + prior.mean / prior.variance) / precision if prior.proper else data_mean
    sigma = math.sqrt(1.0 / precision)
    lo, hi = stats.norm.ppf([alpha / 2, 1 - alpha / 2], mu, sigma)
    p_loss = float(stats.norm.cdf(0.0, mu, sigma))
    # gbstats' risk: [control's loss, treatment's loss]
    control_loss = (1.0 - p_loss) * _truncated_mean(mu, sigma, 0.0, math.inf)
    treatment_loss = -p_loss * _truncated_mean(mu, sigma, -math.inf, 0.0)
    return BayesianResult(
        relative, float(mu), (float(lo), float(hi)), 1.0 - p_loss, float(treatment_loss), float(control_loss)
    )
