"""The common result of a two-arm comparison, and the error codes of degenerate data."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import Enum

from scipy import stats


class ErrorCode(str, Enum):
    """Why a test could not be computed; the result is then neutral (no effect, p = 1)."""

    ZERO_USERS = "zero_users"  # an arm has no units at all
    ZERO_DENOMINATOR = "zero_denominator"  # a ratio's denominator (or baseline mean) is 0
    ZERO_VARIANCE = "zero_variance"  # both arms constant: no test statistic exists
    ALL_CONVERSIONS = "all_conversions"  # proportions of 0 or 1 in both arms
    TOO_FEW_USERS = "too_few_users"  # fewer than 2 units: no sample variance
    NO_PRE_PERIOD = "no_pre_period"  # CUPED asked for but the covariate is missing or constant
    INVALID_INPUT = "invalid_input"  # negative counts, successes > trials, NaN


@dataclass(frozen=True)
class TestResult:
    """Treatment vs control on one metric: absolute effect, relative lift, p-value, CIs.

    `lift` is treatment / control - 1. When `error` is set, every number is neutral
    (effects 0, p-value 1, CIs (0, 0)) so a dashboard never shows NaN.
    """

    __test__ = False  # not a pytest class

    method: str
    control_value: float
    treatment_value: float
    effect: float
    effect_ci: tuple[float, float]
    lift: float
    lift_ci: tuple[float, float]
    p_value: float
    statistic: float = 0.0
    error: ErrorCode | None = None

    @property
    def ok(self) -> bool:
        """True when the test was computed (no error code)."""
        return self.error is None

    def to_dict(self) -> dict:
        """A JSON-serialisable dict (the error code as its string value)."""
        d = asdict(self)
        d["effect_ci"] = list(self.effect_ci)
        d["lift_ci"] = list(self.lift_ci)
        d["error"] = self.error.value if self.error else None
        return d


def neutral_result(
    method: str, error: ErrorCode, control_value: float = 0.0, treatment_value: float = 0.0
) -> TestResult:
    """A result that claims nothing: used for degenerate inputs instead of NaN or an exception."""
    return TestResult(
        method=method,
        control_value=_finite(control_value),
        treatment_value=_finite(treatment_value),
        effect=0.0,
        effect_ci=(0.0, 0.0),
        lift=0.0,
        lift_ci=(0.0, 0.0),
        p_value=1.0,
        statistic=0.0,
        error=error,
    )


def _finite(x: float) -> float:
    return float(x) if math.isfinite(x) else 0.0


def all_finite(*values: float) -> bool:
    """True when no value is NaN or infinite (guards every public computation)."""
    return all(math.isfinite(v) for v in values)


@dataclass(frozen=True)
class Estimate:
    """A point estimate of treatment - control with its variance, before any test is applied.

    Fixed-horizon tests and sequential confidence sequences are both built from it.
    `n` is the total number of units in both arms (what a confidence sequence is indexed by).
    """

    control_value: float
    treatment_value: float
    effect: float
    effect_variance: float
    lift: float
    lift_variance: float
    n: int
    lift_defined: bool = True


def delta_method_lift(
    control_mean: float, treatment_mean: float, control_var_of_mean: float, treatment_var_of_mean: float
) -> tuple[float, float]:
    """Relative lift t/c - 1 and its delta-method variance (as in gbstats' relative tests).

    Var(t/c) ~= Var(t)/c^2 + t^2 Var(c)/c^4, treating the two arms as independent.
    """
    c, t = control_mean, treatment_mean
    lift = t / c - 1.0
    var = treatment_var_of_mean / (c * c) + t * t * control_var_of_mean / c**4
    return lift, var


def t_interval(estimate: float, se: float, dof: float, alpha: float) -> tuple[float, float]:
    """Two-sided (1 - alpha) t interval estimate +- t(1 - alpha/2, dof) se, as statsmodels `tconfint_diff`.

    Not scipy `stats.t.interval`: that is NaN for se = 0 (e.g. the lift CI of an all-zero treatment),
    where the interval is the point (estimate, estimate).
    """
    crit = float(stats.t.ppf(1 - alpha / 2, dof))
    return estimate - crit * se, estimate + crit * se


def z_interval(estimate: float, se: float, alpha: float) -> tuple[float, float]:
    """Two-sided (1 - alpha) normal interval estimate +- z(1 - alpha/2) se, as statsmodels `zconfint`."""
    crit = float(stats.norm.ppf(1 - alpha / 2))
    return estimate - crit * se, estimate + crit * se
