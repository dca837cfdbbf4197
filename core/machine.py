"""Facts about the machine: how many CPUs this process may really use, and what a benchmark ran on.

`os.cpu_count()` counts the host's cores; a container limited by a CPU quota (Docker `--cpus`,
Kubernetes `limits.cpu`) or pinned to a few cores (`taskset`, `--cpuset-cpus`) gets less. Sizing
thread pools and inference streams by the host count oversubscribes such a container.
"""

from __future__ import annotations

import math
import os
import platform
import sys
from importlib import metadata
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


def machine_info() -> dict:
    """CPU model, cores, Python and the versions of the inference libraries."""
    info = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        # Shared machines: a busy neighbour halves the figures; the reader should see that.
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
    # Versions from package metadata: importing ultralytics here would configure it before vision does.
    for key, dist in (
        ("torch", "torch"),
        ("onnxruntime", "onnxruntime"),
        ("open_clip", "open_clip_torch"),
        ("ultralytics", "ultralytics"),
        ("numpy", "numpy"),
        ("pillow", "pillow"),
    ):
        try:
            info[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            info[key] = None
    # Only when torch is already loaded: importing it here would add ~500 MB to the peak RSS reported.
    torch = sys.modules.get("torch")
    info["torch_threads"] = torch.get_num_threads() if torch is not None else None
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
