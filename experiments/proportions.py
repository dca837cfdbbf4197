"""Conversion: two-proportion z-test, with CIs for the difference and for the relative lift."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cached_property

from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

from experiments.result import ErrorCode, Estimate, TestResult, all_finite, neutral_result
from experiments.stats import ProportionStatistic

METHOD = "two-proportion z-test"


@dataclass(frozen=True)
class TwoProportionZTest:
    """Treatment vs control proportions (e.g. purchasers / exposed users).

    Wraps statsmodels `proportions_ztest` (pooled variance under H0, two-sided) for the
    p-value and `confint_proportions_2indep` for the CIs: Newcombe's hybrid score
    interval for the difference (good coverage near 0 and 1) and the log-adjusted
    interval for the ratio, reported as lift = ratio - 1.
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

    def estimate(self) -> Estimate | None:
        """Difference and lift with unpooled (Wald) variances, for confidence sequences."""
        if self.error is not None:
            return None
        c, t = self.control, self.treatment
        var_c, var_t = c.variance / c.n, t.variance / t.n
        lift_defined = c.mean > 0
        lift, lift_var = 0.0, 0.0
        if lift_defined:
            lift = t.mean / c.mean - 1.0
            lift_var = var_t / c.mean**2 + t.mean**2 * var_c / c.mean**4
        return Estimate(c.mean, t.mean, t.mean - c.mean, var_c + var_t, lift, lift_var, c.n + t.n, lift_defined)

    @cached_property
    def _z_and_p(self) -> tuple[float, float]:
        # Kept apart from the CIs so simulations that only need p stay fast.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            z, p = proportions_ztest(
                [self.treatment.successes, self.control.successes], [self.treatment.n, self.control.n]
            )
        return float(z), float(p)

    @cached_property
    def result(self) -> TestResult:
        """The full result; neutral with an error code on degenerate counts."""
        c, t = self.control, self.treatment
        if self.error is not None:
            return neutral_result(METHOD, self.error, c.mean, t.mean)
        z, p = self._z_and_p
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            diff_lo, diff_hi = confint_proportions_2indep(
                t.successes, t.n, c.successes, c.n, compare="diff", method="newcomb", alpha=self.alpha
            )
            error, lift, lift_ci = None, 0.0, (0.0, 0.0)
            if c.successes == 0:
                # Lift relative to a zero baseline is undefined; the difference and p stay valid.
                error = ErrorCode.ZERO_DENOMINATOR
            else:
                r_lo, r_hi = confint_proportions_2indep(
                    t.successes, t.n, c.successes, c.n, compare="ratio", method="log-adjusted", alpha=self.alpha
                )
                lift, lift_ci = t.mean / c.mean - 1.0, (float(r_lo) - 1.0, float(r_hi) - 1.0)
        if not all_finite(z, p, diff_lo, diff_hi, lift, *lift_ci):
            return neutral_result(METHOD, ErrorCode.INVALID_INPUT, c.mean, t.mean)
        return TestResult(
            method=METHOD,
            control_value=c.mean,
            treatment_value=t.mean,
            effect=t.mean - c.mean,
            effect_ci=(float(diff_lo), float(diff_hi)),
            lift=lift,
            lift_ci=lift_ci,
            p_value=float(p),
            statistic=float(z),
            error=error,
        )

    @property
    def p_value(self) -> float:
        """Two-sided p-value of H0: equal proportions."""
        if self.error is not None:
            return 1.0
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
