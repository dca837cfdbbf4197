"""Bench helpers: a fixed image set, throughput bookkeeping, machine description."""

from __future__ import annotations

import numpy as np

from vitrine.bench.vision import bench_images, peak_rss_mb, throughput


def test_bench_images_are_fixed_for_a_seed():
    a, b = bench_images(6, seed=0), bench_images(6, seed=0)
    assert [im.size for im in a] == [im.size for im in b]
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))
    assert all(min(im.size) >= 200 and max(im.size) <= 800 for im in a)
    assert [im.size for im in bench_images(6, seed=1)] != [im.size for im in a]


def test_throughput_counts_images_not_batches():
    calls = []
    result = throughput(lambda batch: calls.append(len(batch)), list(range(10)), 4, warmup=1, rounds=2)
    assert calls == [4] + [4, 4, 2] * 2  # one untimed warm-up batch, then two timed passes
    assert result["images"] == 10 and result["batch"] == 4 and result["rounds"] == 2
    assert 0 < result["images_per_s"] <= result["best_images_per_s"]


def test_peak_rss_is_reported_in_megabytes():
    assert 10 < peak_rss_mb() < 1_000_000  # a Python process with numpy and PIL loaded holds tens of MB
