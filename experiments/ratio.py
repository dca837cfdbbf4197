"""CTR as a ratio metric with the user as unit: delta-method z-test.

Clicks / exposures pooled over impressions would treat impressions as independent;
one user's impressions are correlated, so the variance is taken over users with the
delta method (Deng et al. 2018, "Applying the Delta Method in Metric Analytics").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

from scipy import stats

from experiments.means import MIN_UNITS
from experiments.result import (
    ErrorCode,
    Estimate,
    TestResult,
    all_finite,
    certain_difference,
    delta_method_lift,
    fieller_lift_interval,
    neutral_result,
    z_critical,
)
from experiments.stats import RatioStatistic

METHOD = "delta-method z-test (ratio)"


@dataclass(frozen=True)
class DeltaMethodRatioTest:
    """Treatment vs control ratio of per-user sums (CTR = clicks / exposures).

    Var(ratio) comes from `RatioStatistic.variance_of_ratio`; the z statistic, p-value and difference CI
    are those of statsmodels `ztest` / `zconfint`, from scipy `stats.norm.sf` (statsmodels has no public
    call that takes (estimate, se)); the lift CI is Fieller's with the same variances and critical value.
    Fewer than `MIN_UNITS` users in an arm: the numbers with `too_small` (no verdict).
    """

    control: RatioStatistic
    treatment: RatioStatistic
    alpha: float = 0.05
    METHOD = METHOD

    @property
    def error(self) -> ErrorCode | None:
        """The reason no test exists, or None."""
        c, t = self.control, self.treatment
        if c.n < 0 or t.n < 0:
            return ErrorCode.INVALID_INPUT
        if c.n == 0 or t.n == 0:
            return ErrorCode.ZERO_USERS
        if c.n < 2 or t.n < 2:
            return ErrorCode.TOO_FEW_USERS
        if c.denominator.sum <= 0 or t.denominator.sum <= 0:
            return ErrorCode.ZERO_DENOMINATOR
        return None

    def estimate(self) -> Estimate | None:
        """Difference and lift of the ratios with delta-method variances."""
        if self.error is not None:
            return None
        c, t = self.control, self.treatment
        rc, rt, vc, vt = c.ratio, t.ratio, c.variance_of_ratio, t.variance_of_ratio
        lift_defined = rc != 0
        lift, lift_var = delta_method_lift(rc, rt, vc, vt) if lift_defined else (0.0, 0.0)
        return Estimate(rc, rt, rt - rc, vc + vt, lift, lift_var, c.n + t.n, lift_defined, vc, vt)

    @cached_property
    def result(self) -> TestResult:
        """The full result; neutral with an error code on degenerate data."""
        c, t = self.control, self.treatment
        if self.error is not None:
            return neutral_result(METHOD, self.error, c.ratio, t.ratio)
        return z_result(METHOD, self.estimate(), c.n, t.n, self.alpha)

    @property
    def p_value(self) -> float:
        """Two-sided p-value of H0: equal ratios."""
        return self.result.p_value

    @property
    def confidence_interval(self) -> tuple[float, float]:
        """CI of treatment ratio - control ratio."""
        return self.result.effect_ci

    def compute_result(self) -> TestResult:
        """The result (gbstats naming)."""
        return self.result


def z_result(method: str, est: Estimate, n_c: int, n_t: int, alpha: float) -> TestResult:
    """The z-test of an estimate with delta-method variances (shared by the ratio test and CUPED on ratios).

    p-value and difference CI as statsmodels `ztest` / `zconfint` from (estimate, se); the lift CI is Fieller's
    with the same variances and critical value. Fewer than `MIN_UNITS` users in an arm: `too_small`.
    """
    if est.effect_variance <= 0:  # every user has the same CTR in each arm: a certain difference, no z
        return certain_difference(method, est)
    se = math.sqrt(est.effect_variance)
    z = est.effect / se
    p = 2 * stats.norm.sf(abs(z))
    crit = z_critical(alpha)
    lo, hi = est.effect - crit * se, est.effect + crit * se
    error = ErrorCode.TOO_SMALL if min(n_c, n_t) < MIN_UNITS else None
    lift, lift_ci = 0.0, (0.0, 0.0)
    if not est.lift_defined:
        error = error or ErrorCode.BASELINE_ZERO
    else:
        interval = fieller_lift_interval(
            est.control_value, est.treatment_value, est.control_variance, est.treatment_variance, crit
        )
        if interval is None:
            error = error or ErrorCode.LIFT_UNBOUNDED
        else:
            lift, lift_ci = est.lift, interval
    if not all_finite(z, p, lo, hi, lift, *lift_ci):
        return neutral_result(method, ErrorCode.INVALID_INPUT, est.control_value, est.treatment_value)
    return TestResult(
        method,
        est.control_value,
        est.treatment_value,
        est.effect,
        (float(lo), float(hi)),
        lift,
        (float(lift_ci[0]), float(lift_ci[1])),
        float(p),
        float(z),
        error,
    )
