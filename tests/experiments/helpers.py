"""Sufficient statistics the report tests build more than once."""

from __future__ import annotations

from experiments.stats import ArmStats


def conversion_arm(name: str, users: int, purchasers: int) -> ArmStats:
    """Arms identical in every metric but conversion (CTR, CTR per user and revenue give p = 1)."""
    return ArmStats(
        arm=name,
        users=users,
        exposures=3 * users,
        exposures_sum_squares=10.0 * users,
        clicks=users // 4,
        clicks_sum_squares=0.5 * users,
        clicks_exposures_sum_products=users,
        clickers=users // 5,
        click_rate_sum=0.1 * users,
        click_rate_sum_squares=0.05 * users,
        purchasers=purchasers,
        revenue_sum=2.5 * users,
        revenue_sum_squares=250.0 * users,
    )
