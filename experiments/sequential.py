"""Peeking-safe analysis: always-valid confidence sequences (normal mixture).

The asymptotic confidence sequence of Waudby-Smith et al. (2023, "Time-uniform central
limit theory", eq. 14), built on the normal-mixture boundary of Howard et al. (2021);
it is what GrowthBook's `SequentialTwoSidedTTest` uses. With N units so far and
per-unit variance s^2 = N Var(estimate):

    estimate +- s sqrt( 2 (N rho^2 + 1) / (N^2 rho^2) * log( sqrt(N rho^2 + 1) / alpha ) )

holds for all N simultaneously with probability >= 1 - alpha, so a dashboard may be
refreshed daily without inflating false positives.

Tuning parameter: `tuning_n` (GrowthBook's `sequential_tuning_parameter`, default 5000)
is the total sample size at which the sequence is tightest; rho is chosen for it:
rho^2 = (-2 log alpha + log(-2 log alpha + 1)) / tuning_n. Set it near the planned
sample size; a wrong guess only widens intervals, it never breaks the guarantee.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

from experiments.result import (
    ErrorCode,
    Estimate,
    TestResult,
    all_finite,
    certain_difference,
    fieller_lift_interval,
    neutral_result,
)

DEFAULT_TUNING_N = 5000


class _HasEstimate(Protocol):
    alpha: float
    METHOD: str

    def estimate(self) -> Estimate | None: ...

    def compute_result(self) -> TestResult: ...


def mixture_rho(alpha: float, tuning_n: float) -> float:
    """The mixture parameter that makes the sequence tightest at `tuning_n` units."""
    la = -2.0 * math.log(alpha)
    return math.sqrt((la + math.log(la + 1.0)) / tuning_n)


def sequence_halfwidth(variance: float, n: int, alpha: float, tuning_n: float) -> float:
    """Half-width of the always-valid CI for an estimate with this variance after n units."""
    rho2 = mixture_rho(alpha, tuning_n) ** 2
    s2 = variance * n
    return math.sqrt(s2 * 2.0 * (n * rho2 + 1.0) / (n * n * rho2) * math.log(math.sqrt(n * rho2 + 1.0) / alpha))


def always_valid_p_value(effect: float, variance: float, n: int, alpha: float, tuning_n: float) -> float:
    """The smallest level at which the confidence sequence (same rho) excludes 0, capped at 1.

    Solving |effect| = halfwidth(a) for a gives
    a = sqrt(N rho^2 + 1) exp(-effect^2 N rho^2 / (2 Var (N rho^2 + 1))).
    """
    if variance <= 0 or n <= 0:
        return 1.0
    rho2 = mixture_rho(alpha, tuning_n) ** 2
    k = n * rho2 + 1.0
    exponent = -effect * effect * n * rho2 / (2.0 * variance * k)
    return min(1.0, math.sqrt(k) * math.exp(exponent))


@dataclass(frozen=True)
class SequentialTest:
    """An always-valid version of a fixed-horizon test (any class with `estimate()`).

    `p_value` and the CIs stay valid under continuous monitoring; the point estimates
    are those of the wrapped test.
    """

    test: _HasEstimate
    tuning_n: float = DEFAULT_TUNING_N

    @property
    def alpha(self) -> float:
        """The level of the wrapped test."""
        return self.test.alpha

    @cached_property
    def result(self) -> TestResult:
        """Always-valid result; the wrapped test's neutral result on degenerate data."""
        est = self.test.estimate()
        method = f"sequential {self.test.METHOD} (normal-mixture CS, tuning_n={self.tuning_n:g})"
        if est is None:
            base = self.test.compute_result()
            return neutral_result(
                method, base.error or ErrorCode.INVALID_INPUT, base.control_value, base.treatment_value
            )
        numbers = (est.effect, est.effect_variance, est.lift, est.lift_variance)
        if not all_finite(*numbers, est.control_variance, est.treatment_variance, self.tuning_n) or est.n <= 0:
            # NaN or inf from upstream must not reach a dashboard as a number
            return neutral_result(method, ErrorCode.INVALID_INPUT, est.control_value, est.treatment_value)
        if est.effect_variance <= 0:
            return certain_difference(method, est)
        hw = sequence_halfwidth(est.effect_variance, est.n, self.alpha, self.tuning_n)
        p = always_valid_p_value(est.effect, est.effect_variance, est.n, self.alpha, self.tuning_n)
        lift, lift_ci, error = 0.0, (0.0, 0.0), None
        if not est.lift_defined:
            error = ErrorCode.BASELINE_ZERO
        else:
            # Fieller with the sequence's multiplier (half-width / sd): the lift sequence excludes 0
            # exactly when the difference sequence does, i.e. when the always-valid p < alpha.
            crit = hw / math.sqrt(est.effect_variance)
            interval = fieller_lift_interval(
                est.control_value, est.treatment_value, est.control_variance, est.treatment_variance, crit
            )
            if interval is None:
                error = ErrorCode.LIFT_UNBOUNDED
            else:
                lift, lift_ci = est.lift, interval
        if self.test.compute_result().error == ErrorCode.TOO_SMALL:
            error = ErrorCode.TOO_SMALL  # the fixed-horizon test's verdict on the sample size holds here too
        z = est.effect / math.sqrt(est.effect_variance)
        return TestResult(
            method,
            est.control_value,
            est.treatment_value,
            est.effect,
            (est.effect - hw, est.effect + hw),
            lift,
            lift_ci,
            p,
            z,
            error,
        )

    @property
    def p_value(self) -> float:
        """Always-valid two-sided p-value."""
        return self.result.p_value

    @property
    def confidence_interval(self) -> tuple[float, float]:
        """Always-valid CI of treatment - control."""
        return self.result.effect_ci

    def compute_result(self) -> TestResult:
        """The result (gbstats naming)."""
        return self.result
