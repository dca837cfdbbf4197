"""CUPED: variance reduction with a pre-period covariate (Deng, Xu, Kohavi, Walker 2013).

Means: y_adj = y - theta (x - mean x), theta = Cov(y, x) / Var(x) pooled over both arms. The
pre-period x cannot be affected by treatment, so the adjusted difference is unbiased
and its variance shrinks by a factor (1 - rho^2).

Ratios (CTR = sum clicks / sum exposures): the same adjustment on the delta-method linearisations
(Deng et al. 2013, section 3.3; Deng, Knoblich, Lu 2018, "Applying the Delta Method in Metric
Analytics"): r_adj = r - theta (rp - pooled rp), with the pre-period ratio rp of the same users.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from experiments.means import WelchTTest, mean_estimate, welch_result
from experiments.ratio import DeltaMethodRatioTest, z_result
from experiments.result import ErrorCode, Estimate, TestResult, delta_method_lift, neutral_result
from experiments.stats import RegressionAdjustedRatioStatistic, RegressionAdjustedStatistic

METHOD = "CUPED Welch t-test"
RATIO_METHOD = "CUPED delta-method z-test (ratio)"


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


@dataclass(frozen=True)
class CupedRatioTest:
    """CUPED for a ratio metric (CTR): a delta-method z-test on ratios adjusted by the pre-period ratio.

    Per user the linearised ratios are L = (y - r x) / xbar and Lp = (yp - rp xp) / xpbar (y, x: clicks and
    exposures in the experiment; yp, xp: the same user's in the pre-period). Per arm, r_adj = r - theta
    (rp - pooled rp) with Var(r_adj) = (Var L - 2 theta Cov(L, Lp) + theta^2 Var Lp) / n; one theta for both
    arms, the one that minimises Var(r_adj,t - r_adj,c): sum_arms Cov / n over sum_arms Var Lp / n. The
    pre-period cannot be moved by the treatment, so E[rp_t - rp_c] = 0 and the adjusted difference estimates
    the same effect as the plain one. z statistic, p and CIs as `DeltaMethodRatioTest` (`z_result`).
    NO_PRE_PERIOD when an arm has no pre-period exposures or the pre-period ratio does not vary.
    """

    control: RegressionAdjustedRatioStatistic
    treatment: RegressionAdjustedRatioStatistic
    alpha: float = 0.05
    METHOD = RATIO_METHOD

    @property
    def error(self) -> ErrorCode | None:
        """Why the plain ratio test fails (zero users, no exposures), or NO_PRE_PERIOD; None when CUPED applies."""
        plain = DeltaMethodRatioTest(self.control.post, self.treatment.post, self.alpha).error
        if plain is not None:
            return plain
        return None if self.has_covariate else ErrorCode.NO_PRE_PERIOD

    @property
    def has_covariate(self) -> bool:
        """True when both arms have pre-period exposures and the linearised pre-period ratio varies."""
        c, t = self.control, self.treatment
        if c.n < 2 or t.n < 2 or c.pre.denominator.sum <= 0 or t.pre.denominator.sum <= 0:
            return False
        # relative to the terms it is made of: a constant pre-period ratio leaves only rounding
        scale = sum(
            (s.pre.numerator.variance + s.pre.ratio**2 * s.pre.denominator.variance) / s.pre.denominator.mean**2
            for s in (c, t)
        )
        return c.pre_variance + t.pre_variance > 1e-12 * scale

    @cached_property
    def theta(self) -> float:
        """The coefficient minimising Var of the adjusted difference (0 without a covariate)."""
        if not self.has_covariate:
            return 0.0
        c, t = self.control, self.treatment
        var_pre = c.pre_variance / c.n + t.pre_variance / t.n
        return (c.covariance / c.n + t.covariance / t.n) / var_pre

    def _adjusted(self, s: RegressionAdjustedRatioStatistic, pooled_pre: float) -> tuple[float, float]:
        th = self.theta
        value = s.post.ratio - th * (s.pre.ratio - pooled_pre)
        var = s.post_variance - 2 * th * s.covariance + th * th * s.pre_variance
        return value, max(var, 0.0) / s.n

    def _parts(self) -> tuple[float, float, float, float]:
        c, t = self.control, self.treatment
        pooled_pre = (c.pre.numerator.sum + t.pre.numerator.sum) / (c.pre.denominator.sum + t.pre.denominator.sum)
        rc, vc = self._adjusted(c, pooled_pre)
        rt, vt = self._adjusted(t, pooled_pre)
        return rc, vc, rt, vt

    def estimate(self) -> Estimate | None:
        """Adjusted difference and lift with their delta-method variances (for confidence sequences too)."""
        if self.error is not None:
            return None
        rc, vc, rt, vt = self._parts()
        lift_defined = rc != 0
        lift, lift_var = delta_method_lift(rc, rt, vc, vt) if lift_defined else (0.0, 0.0)
        return Estimate(
            rc, rt, rt - rc, vc + vt, lift, lift_var, self.control.n + self.treatment.n, lift_defined, vc, vt
        )

    @cached_property
    def result(self) -> TestResult:
        """The full result; neutral with an error code on degenerate data or without a pre-period."""
        c, t = self.control, self.treatment
        if self.error is not None:
            return neutral_result(RATIO_METHOD, self.error, c.post.ratio, t.post.ratio)
        return z_result(RATIO_METHOD, self.estimate(), c.n, t.n, self.alpha)

    @property
    def variance_reduction(self) -> float:
        """1 - Var(adjusted diff) / Var(plain diff): the share of variance CUPED removed."""
        c, t = self.control, self.treatment
        plain = c.post.variance_of_ratio + t.post.variance_of_ratio
        if self.error is not None or plain <= 0:
            return 0.0
        _, vc, _, vt = self._parts()
        return 1.0 - (vc + vt) / plain

    @property
    def p_value(self) -> float:
        """Two-sided p-value of H0: equal adjusted ratios."""
        return self.result.p_value

    def compute_result(self) -> TestResult:
        """The result (gbstats naming)."""
        return self.result


def cuped_ratio_or_delta(
    control: RegressionAdjustedRatioStatistic, treatment: RegressionAdjustedRatioStatistic, alpha: float = 0.05
) -> CupedRatioTest | DeltaMethodRatioTest:
    """CUPED on the ratio when both arms have a varying pre-period ratio, else the plain delta-method test."""
    test = CupedRatioTest(control, treatment, alpha)
    return test if test.error is None else DeltaMethodRatioTest(control.post, treatment.post, alpha)
