"""A small in-process cache whose entries expire a fixed time after they were stored.

The storefront path reads a few things on every request that change rarely: the tenant behind a
storefront key, the running experiment of a placement, whether a tenant's filtered item set is
small enough for exact search, the popularity list of a category. Each API process keeps them for
a few seconds; writes made through this process invalidate at once, writes made elsewhere (the
CLI, another API replica) are seen within the TTL. Hits and misses are counted per cache in
Prometheus (`vitrine_serving_cache_lookups_total`).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from recommender import metrics

MISSING: Any = object()


class TTLCache:
    """Thread-safe map of key -> value that forgets a value `ttl_s` after `put`; ttl_s = 0 disables it.

    Bounded: past `max_entries` the oldest entries go first, so keys taken from requests cannot
    grow it without limit.
    """

    def __init__(
        self, name: str, ttl_s: float, *, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic
    ):
        if ttl_s < 0:
            raise ValueError(f"ttl_s must be >= 0, not {ttl_s}")
        self.name, self.ttl_s, self.max_entries, self._clock = name, ttl_s, max_entries, clock
        self._entries: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = metrics.CACHE_LOOKUPS.labels(name, "hit")
        self._misses = metrics.CACHE_LOOKUPS.labels(name, "miss")

    @property
    def enabled(self) -> bool:
        return self.ttl_s > 0

    def get(self, key: Hashable) -> Any:
        """The value stored under `key` if it has not expired, else MISSING."""
        if not self.enabled:
            return MISSING
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] > self._clock():
                self._hits.inc()
                return entry[1]
            if entry is not None:
                del self._entries[key]
        self._misses.inc()
        return MISSING

    def put(self, key: Hashable, value: Any) -> None:
        if not self.enabled:
            return
        with self._lock:
            self._entries[key] = (self._clock() + self.ttl_s, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def get_or_load(self, key: Hashable, load: Callable[[], Any]) -> Any:
        """The cached value, or load() stored and returned (concurrent misses may both load)."""
        value = self.get(key)
        if value is MISSING:
            value = load()
            self.put(key, value)
        return value

    def invalidate(self, match: Callable[[Hashable], bool]) -> int:
        """Forget every entry whose key matches; returns how many."""
        with self._lock:
            gone = [k for k in self._entries if match(k)]
            for k in gone:
                del self._entries[k]
        return len(gone)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
