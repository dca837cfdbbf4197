"""Power: the MDE of the current sample, the sample size a target MDE needs, days remaining."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_effectsize

from experiments.result import ErrorCode

DEFAULT_POWER = 0.8
DEFAULT_TARGET_MDE = 0.05  # relative: 5 % lift


@dataclass(frozen=True)
class PowerResult:
    """Power figures for one metric: all MDEs are two-sided at `alpha` with `power`.

    `n_control` / `ratio` describe the current sample (ratio = n_treatment / n_control);
    `required_n_control` is what `target_relative_mde` needs at the same ratio.
    """

    kind: str  # "proportion" | "mean"
    baseline: float
    n_control: int
    ratio: float
    alpha: float
    power: float
    mde_absolute: float = 0.0
    mde_relative: float = 0.0
    target_relative_mde: float = DEFAULT_TARGET_MDE
    required_n_control: int = 0
    days_remaining: float | None = None
    error: ErrorCode | None = None

    def to_dict(self) -> dict:
        """A JSON-serialisable dict."""
        d = asdict(self)
        d["error"] = self.error.value if self.error else None
        return d


def days_remaining(required_n: float, current_n: float, users_per_day: float) -> float | None:
    """Days until `required_n` units at the current daily rate (0 if reached, None if no traffic)."""
    if current_n >= required_n:
        return 0.0
    if users_per_day <= 0:
        return None
    return (required_n - current_n) / users_per_day


def _solve(**kwargs: float) -> float:
    # solve_power returns a 0-d array or float depending on the unknown; normalise.
    return float(NormalIndPower().solve_power(**kwargs))


def proportion_power(
    baseline_rate: float,
    n_control: int,
    n_treatment: int,
    alpha: float = 0.05,
    power: float = DEFAULT_POWER,
    target_relative_mde: float = DEFAULT_TARGET_MDE,
    control_users_per_day: float = 0.0,
) -> PowerResult:
    """Power of a two-proportion test via Cohen's h (`proportion_effectsize`, `NormalIndPower`).

    The MDE solves NormalIndPower for h at the current n and maps h back to a rate:
    p2 = sin(asin(sqrt(p1)) + h / 2)^2 (an increase).
    """
    ratio = n_treatment / n_control if n_control > 0 else 1.0
    base = PowerResult(
        "proportion", baseline_rate, n_control, ratio, alpha, power, target_relative_mde=target_relative_mde
    )
    if n_control < 2 or n_treatment < 2:
        return replace(base, error=ErrorCode.TOO_FEW_USERS)
    if not 0.0 < baseline_rate < 1.0:
        err = ErrorCode.ALL_CONVERSIONS if baseline_rate >= 1.0 else ErrorCode.ZERO_VARIANCE
        return replace(base, error=err)
    h = _solve(effect_size=None, nobs1=n_control, alpha=alpha, power=power, ratio=ratio)
    angle = math.asin(math.sqrt(baseline_rate)) + h / 2.0
    p2 = 1.0 if angle >= math.pi / 2 else math.sin(angle) ** 2
    mde_abs = p2 - baseline_rate
    target_rate = baseline_rate * (1.0 + target_relative_mde)
    required = 0
    if 0.0 < target_rate < 1.0 and target_relative_mde != 0:
        h_target = abs(float(proportion_effectsize(target_rate, baseline_rate)))
        required = math.ceil(_solve(effect_size=h_target, nobs1=None, alpha=alpha, power=power, ratio=ratio))
    return replace(
        base,
        mde_absolute=mde_abs,
        mde_relative=mde_abs / baseline_rate,
        required_n_control=required,
        days_remaining=days_remaining(required, n_control, control_users_per_day),
    )


def mean_power(
    baseline_mean: float,
    sd: float,
    n_control: int,
    n_treatment: int,
    alpha: float = 0.05,
    power: float = DEFAULT_POWER,
    target_relative_mde: float = DEFAULT_TARGET_MDE,
    control_users_per_day: float = 0.0,
) -> PowerResult:
    """Power of a two-sample test of means with per-unit standard deviation `sd` (`NormalIndPower`).

    Effect size d = delta / sd. For a ratio metric pass the delta-method per-user sd,
    sqrt(n Var(ratio)).
    """
    ratio = n_treatment / n_control if n_control > 0 else 1.0
    base = PowerResult("mean", baseline_mean, n_control, ratio, alpha, power, target_relative_mde=target_relative_mde)
    if n_control < 2 or n_treatment < 2:
        return replace(base, error=ErrorCode.TOO_FEW_USERS)
    if not (math.isfinite(sd) and sd > 0):
        return replace(base, error=ErrorCode.ZERO_VARIANCE)
    d = _solve(effect_size=None, nobs1=n_control, alpha=alpha, power=power, ratio=ratio)
    mde_abs = d * sd
    if baseline_mean == 0:
        return replace(base, mde_absolute=mde_abs, error=ErrorCode.ZERO_DENOMINATOR)
    d_target = abs(baseline_mean * target_relative_mde) / sd
    required = (
        math.ceil(_solve(effect_size=d_target, nobs1=None, alpha=alpha, power=power, ratio=ratio))
        if d_target > 0
        else 0
    )
    return replace(
        base,
        mde_absolute=mde_abs,
        mde_relative=mde_abs / abs(baseline_mean),
        required_n_control=required,
        days_remaining=days_remaining(required, n_control, control_users_per_day),
    )


def proportion_test_power(
    p_control: float, p_treatment: float, n_control: int, ratio: float = 1.0, alpha: float = 0.05
) -> float:
    """Theoretical power of the two-proportion test for true rates (Cohen's h, `NormalIndPower.power`)."""
    h = abs(float(proportion_effectsize(p_treatment, p_control)))
    return float(NormalIndPower().power(effect_size=h, nobs1=n_control, alpha=alpha, ratio=ratio))
