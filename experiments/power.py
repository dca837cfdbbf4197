"""Power: the MDE of the current sample, the sample size a target MDE needs, days remaining."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from scipy.optimize import brentq
from scipy.stats import norm
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_effectsize

from experiments.result import ErrorCode
from experiments.sequential import mixture_rho

DEFAULT_POWER = 0.8
DEFAULT_TARGET_MDE = 0.05  # relative: 5 % lift
MIN_DAYS_FOR_RATE = 1.0  # below one full day of traffic the daily rate is not extrapolated ("too early to tell")


@dataclass(frozen=True)
class PowerResult:
    """Power figures for one metric: all MDEs are two-sided at `alpha` with `power`.

    `n_control` / `ratio` describe the current sample (ratio = n_treatment / n_control);
    `required_n_control` is what `target_relative_mde` needs at the same ratio. `alpha` is the level the
    decision uses (Holm-adjusted for a secondary); `sequential_tuning_n` is set when the decision is the
    always-valid interval, whose critical value replaces z. `too_early`: less than a full day of traffic, so
    no days remaining are extrapolated.
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
    sequential_tuning_n: float | None = None
    too_early: bool = False

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


def sequential_critical_value(n_total: float, alpha: float, tuning_n: float) -> float:
    """The always-valid interval's half-width in standard errors after `n_total` units (z's place).

    From `sequential.sequence_halfwidth`: sqrt(2 (N rho^2 + 1) / (N rho^2) log(sqrt(N rho^2 + 1) / alpha)).
    """
    nr2 = n_total * mixture_rho(alpha, tuning_n) ** 2
    return math.sqrt(2.0 * (nr2 + 1.0) / nr2 * math.log(math.sqrt(nr2 + 1.0) / alpha))


def _mde_effect_size(n_control: float, ratio: float, alpha: float, power: float, tuning_n: float | None) -> float:
    """Standardised MDE (Cohen's d or h) at this sample: NormalIndPower, or the always-valid critical value."""
    if tuning_n is None:
        return _solve(effect_size=None, nobs1=n_control, alpha=alpha, power=power, ratio=ratio)
    # normal approximation with the sequence's critical value for z_(1 - alpha / 2) (the far tail ignored)
    k = sequential_critical_value(n_control * (1.0 + ratio), alpha, tuning_n)
    return (k + float(norm.ppf(power))) * math.sqrt(1.0 / n_control + 1.0 / (ratio * n_control))


def _required_n(effect_size: float, ratio: float, alpha: float, power: float, tuning_n: float | None) -> int:
    """Control units that detect `effect_size` with `power`, fixed-horizon or always-valid."""
    if tuning_n is None:
        return math.ceil(_solve(effect_size=effect_size, nobs1=None, alpha=alpha, power=power, ratio=ratio))

    def gap(n: float) -> float:
        return _mde_effect_size(n, ratio, alpha, power, tuning_n) - effect_size

    hi = 2.0
    while gap(hi) > 0:  # the MDE shrinks as n grows (like log(n) / n under the square root)
        hi *= 2.0
    return math.ceil(brentq(gap, hi / 2.0 if hi > 2.0 else 1.0, hi)) if gap(1.0) > 0 else 1


def proportion_power(
    baseline_rate: float,
    n_control: int,
    n_treatment: int,
    alpha: float = 0.05,
    power: float = DEFAULT_POWER,
    target_relative_mde: float = DEFAULT_TARGET_MDE,
    control_users_per_day: float = 0.0,
    sequential_tuning_n: float | None = None,
) -> PowerResult:
    """Power of a two-proportion test via Cohen's h (`proportion_effectsize`, `NormalIndPower`).

    The MDE solves NormalIndPower for h at the current n and maps h back to a rate:
    p2 = sin(asin(sqrt(p1)) + h / 2)^2 (an increase).
    """
    ratio = n_treatment / n_control if n_control > 0 else 1.0
    base = PowerResult(
        "proportion",
        baseline_rate,
        n_control,
        ratio,
        alpha,
        power,
        target_relative_mde=target_relative_mde,
        sequential_tuning_n=sequential_tuning_n,
    )
    if n_control < 2 or n_treatment < 2:
        return replace(base, error=ErrorCode.TOO_FEW_USERS)
    if not 0.0 < baseline_rate < 1.0:
        err = ErrorCode.ALL_CONVERSIONS if baseline_rate >= 1.0 else ErrorCode.ZERO_VARIANCE
        return replace(base, error=err)
    h = _mde_effect_size(n_control, ratio, alpha, power, sequential_tuning_n)
    angle = math.asin(math.sqrt(baseline_rate)) + h / 2.0
    p2 = 1.0 if angle >= math.pi / 2 else math.sin(angle) ** 2
    mde_abs = p2 - baseline_rate
    target_rate = baseline_rate * (1.0 + target_relative_mde)
    required = 0
    if 0.0 < target_rate < 1.0 and target_relative_mde != 0:
        h_target = abs(float(proportion_effectsize(target_rate, baseline_rate)))
        required = _required_n(h_target, ratio, alpha, power, sequential_tuning_n)
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
    sequential_tuning_n: float | None = None,
) -> PowerResult:
    """Power of a two-sample test of means with per-unit standard deviation `sd` (`NormalIndPower`).

    Effect size d = delta / sd. For a ratio metric pass the delta-method per-user sd,
    sqrt(n Var(ratio)).
    """
    ratio = n_treatment / n_control if n_control > 0 else 1.0
    base = PowerResult(
        "mean",
        baseline_mean,
        n_control,
        ratio,
        alpha,
        power,
        target_relative_mde=target_relative_mde,
        sequential_tuning_n=sequential_tuning_n,
    )
    if n_control < 2 or n_treatment < 2:
        return replace(base, error=ErrorCode.TOO_FEW_USERS)
    if not (math.isfinite(sd) and sd > 0):
        return replace(base, error=ErrorCode.ZERO_VARIANCE)
    d = _mde_effect_size(n_control, ratio, alpha, power, sequential_tuning_n)
    mde_abs = d * sd
    if baseline_mean == 0:
        return replace(base, mde_absolute=mde_abs, error=ErrorCode.ZERO_DENOMINATOR)
    d_target = abs(baseline_mean * target_relative_mde) / sd
    required = _required_n(d_target, ratio, alpha, power, sequential_tuning_n) if d_target > 0 else 0
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
