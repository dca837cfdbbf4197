"""Means per user (e.g. revenue per user): Welch's unequal-variance t-test from sufficient stats."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

from scipy import stats

from experiments.result import (
    ErrorCode,
    Estimate,
    TestResult,
    all_finite,
    certain_difference,
    delta_method_lift,
    fieller_lift_interval,
    neutral_result,
    t_critical,
    t_interval,
)
from experiments.stats import SampleMeanStatistic

METHOD = "Welch t-test"


def welch_dof(var_mean_c: float, n_c: int, var_mean_t: float, n_t: int) -> float:
    """Welch-Satterthwaite degrees of freedom, as statsmodels `CompareMeans.dof_satt`."""
    num = (var_mean_c + var_mean_t) ** 2
    den = var_mean_c**2 / (n_c - 1) + var_mean_t**2 / (n_t - 1)
    return num / den if den > 0 else float(n_c + n_t - 2)


MIN_UNITS = 30  # per arm: below it the normal approximation of a skewed per-user mean is not trusted


def welch_result(
    method: str,
    mean_c: float,
    var_mean_c: float,
    n_c: int,
    mean_t: float,
    var_mean_t: float,
    n_t: int,
    alpha: float,
    difference: float | None = None,
) -> TestResult:
    """A Welch t-test from means and variances of the means (shared by means and CUPED).

    The same t statistic, p-value and difference CI as statsmodels `CompareMeans.ttest_ind(usevar="unequal")`
    and `tconfint_diff`, from scipy `stats.t.sf` and `t_interval`: statsmodels has no public call that takes
    (estimate, se, dof). The lift CI is Fieller's with the same variances and t critical value, so all three
    agree on significance. Fewer than `MIN_UNITS` users in an arm: the numbers with `too_small` (no verdict).
    `difference` is mean_t - mean_c when the caller can compute it more precisely (shifted sums).
    """
    if n_c == 0 or n_t == 0:
        return neutral_result(method, ErrorCode.ZERO_USERS, mean_c, mean_t)
    if n_c < 2 or n_t < 2:
        return neutral_result(method, ErrorCode.TOO_FEW_USERS, mean_c, mean_t)
    se = math.sqrt(var_mean_c + var_mean_t)
    if not all_finite(mean_c, mean_t, se):
        return neutral_result(method, ErrorCode.INVALID_INPUT, mean_c, mean_t)
    est = mean_estimate(mean_c, var_mean_c, n_c, mean_t, var_mean_t, n_t)
    diff = mean_t - mean_c if difference is None else difference
    if se == 0:
        return certain_difference(method, est)
    dof = welch_dof(var_mean_c, n_c, var_mean_t, n_t)
    t = diff / se
    p = 2 * stats.t.sf(abs(t), dof)
    lo, hi = t_interval(diff, se, dof, alpha)
    error = ErrorCode.TOO_SMALL if min(n_c, n_t) < MIN_UNITS else None
    lift, lift_ci = 0.0, (0.0, 0.0)
    if mean_c == 0:
        error = error or ErrorCode.BASELINE_ZERO  # lift undefined; difference and p stay valid
    else:
        interval = fieller_lift_interval(mean_c, mean_t, var_mean_c, var_mean_t, t_critical(alpha, dof))
        if interval is None:
            error = error or ErrorCode.LIFT_UNBOUNDED
        else:
            lift, lift_ci = est.lift, interval
    if not all_finite(t, p, lo, hi, lift, *lift_ci):
        return neutral_result(method, ErrorCode.INVALID_INPUT, mean_c, mean_t)
    return TestResult(
        method,
        mean_c,
        mean_t,
        diff,
        (float(lo), float(hi)),
        lift,
        (float(lift_ci[0]), float(lift_ci[1])),
        float(p),
        float(t),
        error,
    )


def mean_estimate(mean_c: float, var_mean_c: float, n_c: int, mean_t: float, var_mean_t: float, n_t: int) -> Estimate:
    """The Estimate (difference, lift and their variances) behind a comparison of means."""
    lift_defined = mean_c != 0
    lift, lift_var = delta_method_lift(mean_c, mean_t, var_mean_c, var_mean_t) if lift_defined else (0.0, 0.0)
    return Estimate(
        mean_c,
        mean_t,
        mean_t - mean_c,
        var_mean_c + var_mean_t,
        lift,
        lift_var,
        n_c + n_t,
        lift_defined,
        var_mean_c,
        var_mean_t,
    )


@dataclass(frozen=True)
class WelchTTest:
    """Difference in means per user with unequal variances (revenue per user, per-user CTR).

    Equivalent to statsmodels `CompareMeans(d1, d2).ttest_ind(usevar="unequal")` and
    scipy `ttest_ind_from_stats(equal_var=False)`, computed from n, sum, sum of squares.
    """

    control: SampleMeanStatistic
    treatment: SampleMeanStatistic
    alpha: float = 0.05
    METHOD = METHOD

    @cached_property
    def result(self) -> TestResult:
        """The full result; neutral with an error code on degenerate data."""
        c, t = self.control, self.treatment
        if c.n < 0 or t.n < 0 or not all_finite(c.sum, c.sum_squares, c.shift, t.sum, t.sum_squares, t.shift):
            return neutral_result(METHOD, ErrorCode.INVALID_INPUT)
        # the shifts differ by little (Sterbenz: exact), so the difference keeps the digits the means lose
        diff = (t.shift - c.shift) + (t.sum / t.n - c.sum / c.n) if c.n > 0 and t.n > 0 else 0.0
        return welch_result(
            METHOD, c.mean, c.variance_of_mean, c.n, t.mean, t.variance_of_mean, t.n, self.alpha, difference=diff
        )

    @property
    def error(self) -> ErrorCode | None:
        """The error code of the result, or None."""
        return self.result.error

    def estimate(self) -> Estimate | None:
        """Difference and lift with their variances, for confidence sequences."""
        c, t = self.control, self.treatment
        if c.n < 2 or t.n < 2 or not all_finite(c.sum, c.sum_squares, t.sum, t.sum_squares):
            return None
        return mean_estimate(c.mean, c.variance_of_mean, c.n, t.mean, t.variance_of_mean, t.n)

    @property
    def p_value(self) -> float:
        """Two-sided p-value of H0: equal means."""
        return self.result.p_value

    @property
    def confidence_interval(self) -> tuple[float, float]:
        """CI of treatment mean - control mean."""
        return self.result.effect_ci

    def compute_result(self) -> TestResult:
        """The result (gbstats naming)."""
        return self.result
