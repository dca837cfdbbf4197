"""CUPED: variance reduction with a pre-period covariate (Deng, Xu, Kohavi, Walker 2013).

y_adj = y - theta (x - mean x), theta = Cov(y, x) / Var(x) pooled over both arms. The
pre-period x cannot be affected by treatment, so the adjusted difference is unbiased
and its variance shrinks by a factor (1 - rho^2).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from experiments.means import WelchTTest, mean_estimate, welch_result
from experiments.result import ErrorCode, Estimate, TestResult, neutral_result
from experiments.stats import RegressionAdjustedStatistic

METHOD = "CUPED Welch t-test"


@dataclass(frozen=True)
class CupedTTest:
    """Welch t-test on CUPED-adjusted means; NO_PRE_PERIOD when the covariate is constant.

    Reuses the Welch t statistic, p-value and CIs of `welch_result` (scipy `stats.t`).
    Use `cuped_or_welch` to fall back to the plain test when there is no pre-period.
    """

    control: RegressionAdjustedStatistic
    treatment: RegressionAdjustedStatistic
    alpha: float = 0.05
    METHOD = METHOD

    @cached_property
    def theta(self) -> float:
        """The pooled regression coefficient Cov(y, x) / Var(x) (0 without pre-period variance)."""
        c, t = self.control, self.treatment
        n = c.n + t.n
        if n < 2:
            return 0.0
        sx, sy = c.pre.sum + t.pre.sum, c.post.sum + t.post.sum
        var_x = (c.pre.sum_squares + t.pre.sum_squares - sx * sx / n) / (n - 1)
        cov = (c.sum_products + t.sum_products - sx * sy / n) / (n - 1)
        return cov / var_x if var_x > 1e-12 else 0.0

    @property
    def has_covariate(self) -> bool:
        """True when the pre-period covariate varies (otherwise CUPED cannot help)."""
        c, t = self.control, self.treatment
        n = c.n + t.n
        if n < 2:
            return False
        sx = c.pre.sum + t.pre.sum
        return (c.pre.sum_squares + t.pre.sum_squares - sx * sx / n) / (n - 1) > 1e-12

    def _adjusted(self, s: RegressionAdjustedStatistic, pooled_x: float) -> tuple[float, float]:
        th = self.theta
        mean = s.post.mean - th * (s.pre.mean - pooled_x)
        var = s.post.variance - 2 * th * s.covariance + th * th * s.pre.variance
        return mean, max(var, 0.0) / s.n if s.n > 0 else 0.0

    def _parts(self) -> tuple[float, float, float, float]:
        c, t = self.control, self.treatment
        pooled_x = (c.pre.sum + t.pre.sum) / (c.n + t.n)
        mc, vc = self._adjusted(c, pooled_x)
        mt, vt = self._adjusted(t, pooled_x)
        return mc, vc, mt, vt

    @cached_property
    def result(self) -> TestResult:
        """The full result; neutral with NO_PRE_PERIOD when the covariate is missing."""
        c, t = self.control, self.treatment
        if c.n == 0 or t.n == 0:
            return neutral_result(METHOD, ErrorCode.ZERO_USERS, c.post.mean, t.post.mean)
        if not self.has_covariate:
            return neutral_result(METHOD, ErrorCode.NO_PRE_PERIOD, c.post.mean, t.post.mean)
        mc, vc, mt, vt = self._parts()
        return welch_result(METHOD, mc, vc, c.n, mt, vt, t.n, self.alpha)

    def estimate(self) -> Estimate | None:
        """Adjusted difference and lift with their variances, for confidence sequences."""
        blocking = (ErrorCode.ZERO_USERS, ErrorCode.TOO_FEW_USERS, ErrorCode.NO_PRE_PERIOD, ErrorCode.INVALID_INPUT)
        if self.result.error in blocking:
            return None
        mc, vc, mt, vt = self._parts()
        return mean_estimate(mc, vc, self.control.n, mt, vt, self.treatment.n)

    @property
    def variance_reduction(self) -> float:
        """1 - Var(adjusted diff) / Var(plain diff): the share of variance CUPED removed."""
        c, t = self.control, self.treatment
        plain = c.post.variance_of_mean + t.post.variance_of_mean
        if not self.has_covariate or plain <= 0:
            return 0.0
        _, vc, _, vt = self._parts()
        return 1.0 - (vc + vt) / plain

    @property
    def p_value(self) -> float:
        """Two-sided p-value of H0: equal adjusted means."""
        return self.result.p_value

    def compute_result(self) -> TestResult:
        """The result (gbstats naming)."""
        return self.result


def cuped_or_welch(
    control: RegressionAdjustedStatistic, treatment: RegressionAdjustedStatistic, alpha: float = 0.05
) -> CupedTTest | WelchTTest:
    """CUPED when pre-period data exists (the covariate varies), else the plain Welch t-test."""
    test = CupedTTest(control, treatment, alpha)
    return test if test.has_covariate else WelchTTest(control.post, treatment.post, alpha)
