"""Capping (winsorisation) of per-user values, and the small-sample warning for heavy-tailed metrics.

As GrowthBook's percentile capping (and Statsig's winsorisation): every user's value is capped at the
`percentile` of the per-user values over all arms together (zeros included, GrowthBook's default; with
`ignore_zeros` only the buyers' values count), so one whale cannot decide an experiment. With 5 % buyers the
default p99 over all users is about the 80th percentile of the buyers' values. The cap is a
quantile with linear interpolation, numpy `quantile` = SQL `percentile_cont`, so the database can compute
the same cap. Capping changes the estimand (capped revenue per user), which the report states with the cap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from experiments.stats import SampleMeanStatistic

DEFAULT_CAP_PERCENTILE = 0.99
# An arm with fewer non-zero values (buyers) than this: a t-test on heavy-tailed revenue is not trusted.
# A/A simulation (docs/experiments.md): 25 buyers in the small arm of a 1:9 split give a false-positive rate
# of 0.21 even after capping; 250 give 0.06.
MIN_NONZERO_UNITS = 100


@dataclass(frozen=True)
class Capping:
    """Per-user capping of a metric: at `percentile` of the values (non-zero only when `ignore_zeros`)."""

    percentile: float = DEFAULT_CAP_PERCENTILE
    ignore_zeros: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.percentile <= 1.0:
            raise ValueError(f"cap percentile must be in (0, 1], got {self.percentile!r}")

    def cap(self, *arms: Sequence[float] | np.ndarray) -> float | None:
        """The cap over all arms' per-user values; None when there is nothing to cap."""
        values = np.concatenate([np.asarray(a, dtype=float) for a in arms]) if arms else np.array([])
        if self.ignore_zeros:
            values = values[values != 0]
        if values.size == 0:
            return None
        return float(np.quantile(values, self.percentile))


def capped_statistic(values: Sequence[float] | np.ndarray, cap: float | None) -> SampleMeanStatistic:
    """The per-user values capped at `cap` (no cap when None), as sufficient statistics (shifted sums)."""
    x = np.asarray(values, dtype=float)
    if cap is not None:
        x = np.minimum(x, cap)
    return SampleMeanStatistic.from_values(x)


def small_sample_warning(metric: str, nonzero_per_arm: dict[str, int]) -> str | None:
    """A warning when an arm has fewer than MIN_NONZERO_UNITS non-zero values of a heavy-tailed metric."""
    small = {arm: n for arm, n in nonzero_per_arm.items() if n < MIN_NONZERO_UNITS}
    if not small:
        return None
    listed = ", ".join(f"{arm}: {n}" for arm, n in small.items())
    return (
        f"{metric}: fewer than {MIN_NONZERO_UNITS} users with a non-zero value in an arm ({listed}); heavy-tailed "
        "values make the t-test unreliable at this size (A/A false-positive rates up to 0.2): wait for more data"
    )
