"""Pure helpers of `vitrine bench serve`: latency summaries, recall, cache hit rates, the synthetic vectors."""

from __future__ import annotations

import numpy as np

from vitrine.bench.serve import (
    cache_hit_rates,
    clustered_vectors,
    latency_summary,
    recall_at_k,
    tail_seconds,
)


def test_latency_summary_in_milliseconds():
    s = latency_summary([0.001, 0.002, 0.003, 0.004], elapsed_s=2.0, errors=1)
    # p50 of 1..4 ms by linear interpolation is 2.5 ms; 4 successes in 2 s is 2 per second.
    assert (s["requests"], s["errors"], s["qps"], s["p50_ms"], s["max_ms"]) == (4, 1, 2.0, 2.5, 4.0)


def test_latency_summary_percentiles_interpolate_between_ranks():
    s = latency_summary([0.012, 0.003, 0.05, 0.007, 0.02, 0.011, 0.009], elapsed_s=1.0)
    # Unsorted input. Sorted, ranks 0..6: p50 is rank 3 (11 ms); p95 is rank 5.7, 20 + 0.7 * (50 - 20) = 41 ms;
    # p99 is rank 5.94, 20 + 0.94 * 30 = 48.2 ms (the linear definition, numpy's default).
    assert (s["p50_ms"], s["p95_ms"], s["p99_ms"], s["max_ms"]) == (11.0, 41.0, 48.2, 50.0)


def test_tail_seconds_places_the_slow_requests_in_the_seconds_they_were_sent():
    # Second 0: two fast; second 3: three slow of four (a stall); second 7: one slow; 50 ms itself is not over.
    starts = [0.1, 0.5, 3.0, 3.2, 3.4, 3.9, 7.5, 8.0]
    lat = [0.005, 0.05, 0.2, 0.12, 0.09, 0.004, 0.061, 0.01]
    t = tail_seconds(starts, lat, t0_wall=86_400 * 365 + 3600, top=2)  # 1971-01-01 01:00:00 UTC
    assert (t["over_50ms"], t["seconds_over_50ms"]) == (4, 2)
    assert t["worst_seconds"] == [
        {"at": "01:00:03", "requests": 4, "over_50ms": 3, "max_ms": 200.0},
        {"at": "01:00:07", "requests": 1, "over_50ms": 1, "max_ms": 61.0},
    ]
    assert tail_seconds([], [], t0_wall=0.0) == {"over_50ms": 0, "seconds_over_50ms": 0, "worst_seconds": []}


def test_latency_summary_of_no_success_has_no_percentiles():
    # A saturated level where every request failed: counts stay, latencies are None (JSON null), not NaN.
    assert latency_summary([], elapsed_s=3.0, errors=5) == {
        "requests": 0,
        "errors": 5,
        "elapsed_s": 3.0,
        "qps": 0.0,
        "p50_ms": None,
        "p95_ms": None,
        "p99_ms": None,
        "max_ms": None,
    }


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
    assert cache_hit_rates(before, after) == {
        "tenant": {"lookups": 100, "hit_rate": 0.97},
        "experiment": {"lookups": 4, "hit_rate": 0.75},
    }
