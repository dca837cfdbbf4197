"""Conversion: two-proportion z-test whose p-value, difference CI and lift CI are one method.

The unpooled (Wald) z statistic z = (p_t - p_c) / sqrt(p_c(1-p_c)/n_c + p_t(1-p_t)/n_t) gives the
p-value; the difference CI is its inversion, (p_t - p_c) +- z_crit se; the lift CI is Fieller's interval
with the same variances and critical value (`experiments.result.fieller_lift_interval`). So p < alpha,
"difference CI excludes 0" and "lift CI excludes 0" are the same statement. It is also what the
sequential view and gbstats (unpooled variance) use. Below Cochran's rule (an expected count of
successes or failures under 5 in an arm) the normal approximation is not trusted: Fisher's exact
test gives p, Newcombe's hybrid score interval the difference CI, and the result carries
`too_small` (no verdict).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import cached_property

from scipy import stats
from statsmodels.stats.proportion import confint_proportions_2indep

from experiments.result import (
    ErrorCode,
    Estimate,
    TestResult,
    all_finite,
    certain_difference,
    fieller_lift_interval,
    neutral_result,
    z_critical,
)
from experiments.stats import ProportionStatistic

METHOD = "two-proportion z-test (unpooled)"
EXACT_METHOD = "Fisher exact test (too small for z)"
MIN_EXPECTED_COUNT = 5.0  # Cochran's rule for the normal approximation of a 2x2 table


@dataclass(frozen=True)
class TwoProportionZTest:
    """Treatment vs control proportions (e.g. purchasers / exposed users).

    The z statistic and CIs are statsmodels `test_proportions_2indep(method="wald")` and
    `confint_proportions_2indep(method="wald")`, computed in closed form here so the lift CI
    (Fieller, same variances) and the sequential view share them; small tables use scipy
    `fisher_exact` and statsmodels `confint_proportions_2indep(method="newcomb")`.
    """

    control: ProportionStatistic
    treatment: ProportionStatistic
    alpha: float = 0.05
    METHOD = METHOD

    @property
    def error(self) -> ErrorCode | None:
        """The reason no test exists for these counts, or None."""
        c, t = self.control, self.treatment
        if not (c.is_valid and t.is_valid):
            return ErrorCode.INVALID_INPUT
        if c.n == 0 or t.n == 0:
            return ErrorCode.ZERO_USERS
        successes, n = c.successes + t.successes, c.n + t.n
        if successes == 0:
            return ErrorCode.ZERO_VARIANCE
        if successes == n:
            return ErrorCode.ALL_CONVERSIONS
        return None

    @property
    def too_small(self) -> bool:
        """True when an arm expects fewer than 5 successes or failures under H0 (Cochran's rule)."""
        c, t = self.control, self.treatment
        pooled = (c.successes + t.successes) / (c.n + t.n)
        return min(c.n, t.n) * min(pooled, 1.0 - pooled) < MIN_EXPECTED_COUNT

    def estimate(self) -> Estimate | None:
        """Difference and lift with unpooled (Wald) variances: the same as the fixed-horizon test."""
        if self.error is not None:
            return None
        c, t = self.control, self.treatment
        var_c, var_t = c.variance / c.n, t.variance / t.n
        lift_defined = c.mean > 0
        lift, lift_var = 0.0, 0.0
        if lift_defined:
            lift = t.mean / c.mean - 1.0
            lift_var = var_t / c.mean**2 + t.mean**2 * var_c / c.mean**4
        return Estimate(
            c.mean, t.mean, t.mean - c.mean, var_c + var_t, lift, lift_var, c.n + t.n, lift_defined, var_c, var_t
        )

    @cached_property
    def _z_and_p(self) -> tuple[float, float]:
        # Kept apart from the CIs so simulations that only need p stay fast.
        est = self.estimate()
        if est is None or est.effect_variance <= 0:
            return 0.0, 1.0
        z = est.effect / math.sqrt(est.effect_variance)
        return z, float(2 * stats.norm.sf(abs(z)))

    @cached_property
    def _exact_p(self) -> float:
        c, t = self.control, self.treatment
        table = [[t.successes, t.n - t.successes], [c.successes, c.n - c.successes]]
        return float(stats.fisher_exact(table, alternative="two-sided").pvalue)

    @cached_property
    def result(self) -> TestResult:
        """The full result; neutral with an error code on degenerate counts."""
        c, t = self.control, self.treatment
        if self.error is not None:
            return neutral_result(METHOD, self.error, c.mean, t.mean)
        if self.too_small:
            return self._small_sample_result()
        est = self.estimate()
        if est.effect_variance <= 0:  # 0 % in one arm, 100 % in the other: a certain difference, no z
            return certain_difference(METHOD, est)
        z, p = self._z_and_p
        crit = z_critical(self.alpha)
        hw = crit * math.sqrt(est.effect_variance)
        error, lift, lift_ci = None, 0.0, (0.0, 0.0)
        if not est.lift_defined:
            error = ErrorCode.BASELINE_ZERO  # lift relative to 0 is undefined; difference and p stay valid
        else:
            interval = fieller_lift_interval(c.mean, t.mean, est.control_variance, est.treatment_variance, crit)
            if interval is None:
                error = ErrorCode.LIFT_UNBOUNDED
            else:
                lift, lift_ci = est.lift, interval
        if not all_finite(z, p, hw, lift, *lift_ci):
            return neutral_result(METHOD, ErrorCode.INVALID_INPUT, c.mean, t.mean)
        return TestResult(
            METHOD, c.mean, t.mean, est.effect, (est.effect - hw, est.effect + hw), lift, lift_ci, p, z, error
        )

    def _small_sample_result(self) -> TestResult:
        """Fisher's exact p and Newcombe's CI with `too_small`: shown, never a verdict."""
        c, t = self.control, self.treatment
        est = self.estimate()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            lo, hi = confint_proportions_2indep(
                t.successes, t.n, c.successes, c.n, compare="diff", method="newcomb", alpha=self.alpha
            )
        lift, lift_ci = 0.0, (0.0, 0.0)
        if est.lift_defined:
            crit = z_critical(self.alpha)
            interval = fieller_lift_interval(c.mean, t.mean, est.control_variance, est.treatment_variance, crit)
            if interval is not None:
                lift, lift_ci = est.lift, interval
        return TestResult(
            EXACT_METHOD,
            c.mean,
            t.mean,
            est.effect,
            (float(lo), float(hi)),
            lift,
            lift_ci,
            self._exact_p,
            0.0,
            ErrorCode.TOO_SMALL,
        )

    @property
    def p_value(self) -> float:
        """Two-sided p-value of H0: equal proportions (Fisher's exact p for small tables)."""
        if self.error is not None:
            return 1.0
        if self.too_small:
            return self._exact_p
        p = self._z_and_p[1]
        return p if all_finite(p) else 1.0

    @property
    def confidence_interval(self) -> tuple[float, float]:
        """CI of treatment - control (absolute difference of proportions)."""
        return self.result.effect_ci

    @property
    def lift_confidence_interval(self) -> tuple[float, float]:
        """CI of treatment / control - 1."""
        return self.result.lift_ci

    def compute_result(self) -> TestResult:
        """The result (gbstats naming)."""
        return self.result
