"""Machine facts: usable CPUs under affinity masks and cgroup quotas; what a benchmark ran on."""

import os

from core.machine import machine_info, quota_cpus, usable_cpus


def test_usable_cpus_follow_the_affinity_mask_and_the_cgroup_quota():
    assert usable_cpus() <= len(os.sched_getaffinity(0))
    assert quota_cpus("max", "100000") is None and quota_cpus("-1", "100000") is None  # v2 / v1: no limit
    assert quota_cpus("150000", "100000") == 1.5  # docker --cpus 1.5: two streams, rounded up
    assert quota_cpus("50000\n", "100000\n") == 0.5


def test_machine_info_names_the_machine():
    info = machine_info()
    assert info["cores"] >= 1 and info["cpu"] and info["python"].startswith("3.")
    assert info["torch"] and info["onnxruntime"]
    assert 1 <= info["usable_cpus"] <= info["cores"]
