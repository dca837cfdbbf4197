"""How many CPUs this process may really use.

`os.cpu_count()` counts the host's cores; a container limited by a CPU quota (Docker `--cpus`,
Kubernetes `limits.cpu`) or pinned to a few cores (`taskset`, `--cpuset-cpus`) gets less. Sizing
thread pools and inference streams by the host count oversubscribes such a container.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_V2_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
CGROUP_V1_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")


def quota_cpus(quota: str, period: str) -> float | None:
    """CPUs granted by a CFS quota and period ("max" or a negative quota: no limit)."""
    quota, period = quota.strip(), period.strip()
    if quota in ("max", "") or int(quota) <= 0 or int(period) <= 0:
        return None
    return int(quota) / int(period)


def _cgroup_cpus() -> float | None:
    try:
        if CGROUP_V2_CPU_MAX.exists():
            quota, _, period = CGROUP_V2_CPU_MAX.read_text().partition(" ")
            return quota_cpus(quota, period or "100000")
        if CGROUP_V1_QUOTA.exists():
            return quota_cpus(CGROUP_V1_QUOTA.read_text(), CGROUP_V1_PERIOD.read_text())
    except (OSError, ValueError):
        return None
    return None


def usable_cpus() -> int:
    """Cores this process may run on, lowered to its cgroup CPU quota (rounded up), at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_cpus()
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)
