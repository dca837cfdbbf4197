"""The catalogue of metrics: which statistic and which test each one uses, and its per-arm CI."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from statsmodels.stats.proportion import proportion_confint

from experiments.cuped import cuped_or_welch, cuped_ratio_or_delta
from experiments.means import WelchTTest
from experiments.power import PowerResult, mean_power, proportion_power
from experiments.proportions import TwoProportionZTest
from experiments.ratio import DeltaMethodRatioTest
from experiments.result import t_interval, z_interval
from experiments.stats import ArmStats


@dataclass(frozen=True)
class Metric:
    """A named metric: how to test two arms, an arm's value with its CI, and its power."""

    name: str
    label: str
    kind: str  # "proportion" | "ratio" | "mean"
    make_test: Callable[[ArmStats, ArmStats, float, bool], object]
    cuped_capable: bool = False


def _prop(attr: str) -> Callable[[ArmStats, ArmStats, float, bool], object]:
    def make(c: ArmStats, t: ArmStats, alpha: float, cuped: bool) -> object:
        if cuped and attr == "conversion":
            return cuped_or_welch(c.conversion_cuped, t.conversion_cuped, alpha)
        return TwoProportionZTest(getattr(c, attr), getattr(t, attr), alpha)

    return make


def _ratio(c: ArmStats, t: ArmStats, alpha: float, cuped: bool) -> object:
    if cuped:
        return cuped_ratio_or_delta(c.ctr_cuped, t.ctr_cuped, alpha)
    return DeltaMethodRatioTest(c.ctr, t.ctr, alpha)


def _ctr_per_user(c: ArmStats, t: ArmStats, alpha: float, cuped: bool) -> object:
    return WelchTTest(c.ctr_per_user, t.ctr_per_user, alpha)


def _revenue(c: ArmStats, t: ArmStats, alpha: float, cuped: bool) -> object:
    if cuped:
        return cuped_or_welch(c.revenue_cuped, t.revenue_cuped, alpha)
    return WelchTTest(c.revenue_per_user, t.revenue_per_user, alpha)


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("ctr", "CTR (clicks / exposures, user-level delta method)", "ratio", _ratio, True),
        Metric("ctr_per_user", "CTR per user (mean of each user's clicks / exposures)", "mean", _ctr_per_user),
        Metric(
            "click_through",
            "Click-through users (users who clicked / users exposed)",
            "proportion",
            _prop("click_through"),
        ),
        Metric("conversion", "Conversion (purchasers / users exposed)", "proportion", _prop("conversion"), True),
        Metric("revenue_per_user", "Revenue per exposed user", "mean", _revenue, True),
    )
}


def arm_value(metric: Metric, s: ArmStats, alpha: float) -> tuple[float, tuple[float, float]]:
    """The arm's own value and CI: Wilson for proportions (`proportion_confint`), z for CTR, t (n - 1) for means.

    The t interval is statsmodels `DescrStatsW.tconfint_mean` computed from sufficient statistics.
    """
    if s.users == 0:
        return 0.0, (0.0, 0.0)
    if metric.kind == "proportion":
        p = s.click_through if metric.name == "click_through" else s.conversion
        lo, hi = proportion_confint(p.successes, p.n, alpha=alpha, method="wilson")
        return p.mean, (float(lo), float(hi))
    if metric.kind == "ratio":
        r = s.ctr
        lo, hi = z_interval(r.ratio, math.sqrt(r.variance_of_ratio), alpha)
        return r.ratio, (float(lo), float(hi))
    m = s.ctr_per_user if metric.name == "ctr_per_user" else s.revenue_per_user
    if m.n < 2:
        return m.mean, (m.mean, m.mean)
    lo, hi = t_interval(m.mean, math.sqrt(m.variance_of_mean), m.n - 1, alpha)
    return m.mean, (float(lo), float(hi))


def metric_power(
    metric: Metric,
    c: ArmStats,
    t: ArmStats,
    alpha: float,
    power: float,
    target_relative_mde: float,
    control_users_per_day: float,
    sequential_tuning_n: float | None = None,
) -> PowerResult:
    """MDE now, n needed for the target MDE, days remaining: proportions via Cohen's h, else d.

    `alpha` is the level the decision uses; `sequential_tuning_n` when it is the always-valid interval.
    """
    kw = {
        "alpha": alpha,
        "power": power,
        "target_relative_mde": target_relative_mde,
        "control_users_per_day": control_users_per_day,
        "sequential_tuning_n": sequential_tuning_n,
    }
    if metric.kind == "proportion":
        p = c.click_through if metric.name == "click_through" else c.conversion
        return proportion_power(p.mean, c.users, t.users, **kw)
    if metric.kind == "ratio":
        r = c.ctr
        # per-user sd of the linearised ratio: Var(ratio) = sd^2 / n
        sd = math.sqrt(r.variance_of_ratio * r.n) if r.n > 0 else 0.0
        return mean_power(r.ratio, sd, c.users, t.users, **kw)
    m = c.ctr_per_user if metric.name == "ctr_per_user" else c.revenue_per_user
    return mean_power(m.mean, math.sqrt(m.variance), c.users, t.users, **kw)
