"""Pure helpers of `vitrine bench serve`: percentiles, summaries, recall, the synthetic vectors."""

from __future__ import annotations

import numpy as np
import pytest

from vitrine.bench.serve import (
    cache_hit_rates,
    clustered_vectors,
    latency_summary,
    percentile,
    recall_at_k,
)


@pytest.mark.parametrize("q", [0, 50, 95, 99, 100])
def test_percentile_matches_numpy_linear(q):
    values = sorted([0.012, 0.003, 0.05, 0.007, 0.02, 0.011, 0.009])
    # numpy's default method ("linear") is the reference.
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), abs=1e-12)


def test_percentile_of_nothing_is_nan():
    assert np.isnan(percentile([], 50))


def test_latency_summary_in_milliseconds():
    s = latency_summary([0.001, 0.002, 0.003, 0.004], elapsed_s=2.0, errors=1)
    # p50 of 1..4 ms by linear interpolation is 2.5 ms; 4 successes in 2 s is 2 per second.
    assert (s["requests"], s["errors"], s["qps"], s["p50_ms"], s["max_ms"]) == (4, 1, 2.0, 2.5, 4.0)


def test_recall_at_k():
    assert recall_at_k(["a", "b", "c"], ["a", "c", "d", "e"], k=4) == 0.5
    assert recall_at_k([], [], k=10) == 1.0
    assert recall_at_k(["x"], ["a"], k=10) == 0.0


def test_clustered_vectors_are_seeded_unit_and_clustered():
    # 6,000 vectors over 1,000 centres: about 6 per cluster, in two chunks.
    a = list(clustered_vectors(6000, 64, seed=3))
    b = list(clustered_vectors(6000, 64, seed=3))
    x = np.concatenate([v for _, v, _ in a])
    assert x.shape == (6000, 64) and np.array_equal(x, np.concatenate([v for _, v, _ in b]))
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    # Clustered, not uniform: each vector's nearest other vector is far closer than a random one.
    sims = x @ x.T
    np.fill_diagonal(sims, -1)
    assert np.median(sims.max(axis=1)) > 0.5 > np.median(sims)


def test_cache_hit_rates_between_two_readings():
    before = {"tenant": {"hit": 10, "miss": 2}, "popular": {"hit": 5, "miss": 1}}
    after = {"tenant": {"hit": 107, "miss": 5}, "popular": {"hit": 5, "miss": 1}, "experiment": {"hit": 3, "miss": 1}}
    # tenant: 97 hits and 3 misses in between; popular: not read; experiment: new since the first reading.
    assert cache_hit_rates(before, after) == {"tenant": {"lookups": 100, "hit_rate": 0.97},
                                              "experiment": {"lookups": 4, "hit_rate": 0.75}}
