"""The common result of a two-arm comparison, and the error codes of degenerate data."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import Enum

from scipy import stats


class ErrorCode(str, Enum):
    """Why a test could not be computed; the result is then neutral (no effect, p = 1)."""

    ZERO_USERS = "zero_users"  # an arm has no units at all
    ZERO_DENOMINATOR = "zero_denominator"  # a ratio's denominator is 0 in an arm (no exposures)
    ZERO_VARIANCE = "zero_variance"  # both arms constant: no test statistic; a real difference is still reported
    TOO_SMALL = "too_small"  # too few units (or expected counts) for the normal approximation: no verdict
    BASELINE_ZERO = "baseline_zero"  # note: control value 0, lift undefined; difference and p stay valid
    LIFT_UNBOUNDED = "lift_unbounded"  # note: control not distinguishable from 0, the lift CI is unbounded
    ALL_CONVERSIONS = "all_conversions"  # proportions of 0 or 1 in both arms
    TOO_FEW_USERS = "too_few_users"  # fewer than 2 units: no sample variance
    NO_PRE_PERIOD = "no_pre_period"  # CUPED asked for but the covariate is missing or constant
    INVALID_INPUT = "invalid_input"  # negative counts, successes > trials, NaN


# Codes that only say the relative lift is unavailable: the difference, its CI and p decide as usual.
NOTE_CODES = frozenset({ErrorCode.BASELINE_ZERO, ErrorCode.LIFT_UNBOUNDED})


@dataclass(frozen=True)
class TestResult:
    """Treatment vs control on one metric: absolute effect, relative lift, p-value, CIs.

    `lift` is treatment / control - 1. When `error` is set, the numbers are neutral (effects 0,
    p-value 1, CIs (0, 0)) so a dashboard never shows NaN, except for the codes that keep the real
    estimates: `NOTE_CODES` (lift 0 and lift CI (0, 0), everything else valid), `TOO_SMALL` and
    `ZERO_VARIANCE` with a difference (real effect and lift, no verdict). `decisive` says whether
    p may be read as a verdict.
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

    @property
    def decisive(self) -> bool:
        """True when p-value and CIs may decide (no error, or only a note about the lift)."""
        return self.error is None or self.error in NOTE_CODES

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
    control_variance: float = 0.0  # Var(control mean): what a Fieller lift interval needs
    treatment_variance: float = 0.0  # Var(treatment mean)


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


def fieller_lift_interval(
    control_mean: float, treatment_mean: float, control_var: float, treatment_var: float, crit: float
) -> tuple[float, float] | None:
    """CI of the lift t/c - 1 by Fieller's theorem with the same variances and critical value as the difference test.

    The set of ratios rho with |t - rho c| <= crit sqrt(Var t + rho^2 Var c) (Fieller 1954; the test-inversion
    form of the delta method). At rho = 1 this is the difference test itself, so the interval excludes a lift
    of 0 exactly when the difference's CI excludes 0, and rho = t/c is always inside. None when c is not
    distinguishable from 0 (c^2 <= crit^2 Var c): the set is then unbounded.
    """
    c, t, k2 = control_mean, treatment_mean, crit * crit
    a = c * c - k2 * control_var
    if a <= 0:
        return None
    b = t * c
    disc = b * b - a * (t * t - k2 * treatment_var)
    root = math.sqrt(max(disc, 0.0))
    lo, hi = (b - root) / a, (b + root) / a
    return lo - 1.0, hi - 1.0


def z_critical(alpha: float) -> float:
    """The two-sided normal critical value z(1 - alpha/2)."""
    return float(stats.norm.ppf(1 - alpha / 2))


def t_critical(alpha: float, dof: float) -> float:
    """The two-sided t critical value t(1 - alpha/2, dof)."""
    return float(stats.t.ppf(1 - alpha / 2, dof))


def certain_difference(method: str, est: Estimate) -> TestResult:
    """Both arms constant but different: the real difference, point CIs, p = 0, and `zero_variance`.

    Never effect 0 and p 1 (that would hide a difference); the code keeps it from being a verdict,
    since a test statistic does not exist.
    """
    lift = est.lift if est.lift_defined else 0.0
    return TestResult(
        method,
        est.control_value,
        est.treatment_value,
        est.effect,
        (est.effect, est.effect),
        lift,
        (lift, lift),
        0.0 if est.effect != 0 else 1.0,
        0.0,
        ErrorCode.ZERO_VARIANCE,
    )
