"""The per-day series: per-(arm, day) increments of sufficient statistics -> what each daily peek saw (pure)."""

from __future__ import annotations

from dataclasses import fields, replace
from datetime import date, timedelta

from experiments.stats import ArmStats, DailyArmStats


def cumulate_daily(increments: list[tuple[str, date, dict]]) -> tuple[DailyArmStats, ...]:
    """Turn per-day increments into cumulative per-arm stats for every day in range (pure)."""
    if not increments:
        return ()
    arms = sorted({a for a, _, _ in increments})
    first, last = min(d for _, d, _ in increments), max(d for _, d, _ in increments)
    by_key = {(a, d): ArmStats.from_mapping(a, row) for a, d, row in increments}
    running = {a: ArmStats(arm=a) for a in arms}
    out: list[DailyArmStats] = []
    day = first
    while day <= last:
        for a in arms:
            inc = by_key.get((a, day))
            if inc is not None:
                running[a] = _add(running[a], inc)
            out.append(DailyArmStats(day, running[a]))
        day += timedelta(days=1)
    return tuple(out)


def _add(a: ArmStats, b: ArmStats) -> ArmStats:
    changes = {f.name: getattr(a, f.name) + getattr(b, f.name) for f in fields(ArmStats) if f.name != "arm"}
    return replace(a, **changes)
