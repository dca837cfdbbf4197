"""The storefront's lookup cache: expiry, bounds, invalidation, hit/miss counts (pure, fake clock)."""

from __future__ import annotations

import pytest

from recommender import metrics
from recommender.ttl_cache import MISSING, TTLCache
from tests.recommender.helpers import Clock


def counted(name: str, outcome: str) -> float:
    return metrics.CACHE_LOOKUPS.labels(name, outcome)._value.get()


def test_a_value_lives_exactly_ttl_seconds():
    clock = Clock()
    cache = TTLCache("t-expiry", 2.0, clock=clock)
    cache.put("k", None)  # None is a value (e.g. "no running experiment"), not a miss
    clock.now += 1.999
    assert cache.get("k") is None
    clock.now += 0.001
    assert cache.get("k") is MISSING and len(cache) == 0


def test_ttl_zero_disables_it():
    cache = TTLCache("t-off", 0)
    cache.put("k", 1)
    assert not cache.enabled and cache.get("k") is MISSING
    loads = []
    assert cache.get_or_load("k", lambda: loads.append(1) or 7) == 7
    assert cache.get_or_load("k", lambda: loads.append(1) or 7) == 7 and len(loads) == 2


def test_get_or_load_loads_once_per_ttl_and_counts_hits_and_misses():
    clock = Clock()
    cache = TTLCache("t-load", 5.0, clock=clock)
    hits, misses = counted("t-load", "hit"), counted("t-load", "miss")
    loads = []
    for _ in range(3):
        assert cache.get_or_load(("acme", "shirts"), lambda: loads.append(1) or "list") == "list"
    clock.now += 5.0
    cache.get_or_load(("acme", "shirts"), lambda: loads.append(1) or "list")
    assert len(loads) == 2
    assert counted("t-load", "hit") - hits == 2 and counted("t-load", "miss") - misses == 2


def test_it_is_bounded_oldest_first():
    cache = TTLCache("t-bound", 60, max_entries=3)
    for k in "abcd":
        cache.put(k, k)
    assert len(cache) == 3 and cache.get("a") is MISSING and cache.get("d") == "d"


def test_invalidate_forgets_only_matching_keys():
    cache = TTLCache("t-inv", 60)
    cache.put(("acme", "similar"), 1)
    cache.put(("acme", "home"), 2)
    cache.put(("globex", "similar"), 3)
    assert cache.invalidate(lambda k: k == ("acme", "similar")) == 1
    assert cache.get(("acme", "similar")) is MISSING
    assert cache.get(("acme", "home")) == 2 and cache.get(("globex", "similar")) == 3


def test_negative_ttl_is_refused():
    with pytest.raises(ValueError):
        TTLCache("t-neg", -1)
