"""Which detector finds the items of a shopper's photo: the tenant's active student, else the configured one.

A tenant's active detector (db/detectors.py) is looked up through a TTL cache (an activation made
elsewhere reaches this process within VITRINE_LOOKUP_CACHE_TTL_S); loaded students are kept by model
key, the least recently used one dropped past `max_loaded`. A student whose weights cannot load is
logged once per key and the configured detector serves instead, so a bad artefact never fails a search.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from db.detectors import active_detector
from recommender.ttl_cache import MISSING, TTLCache
from vision.detector import Detector
from vision.model import ModelLoadError

log = logging.getLogger(__name__)


class TenantDetectors:
    """`for_tenant(session_factory, tenant_id) -> Detector`, loading each tenant's student once."""

    def __init__(
        self,
        default: Detector,
        *,
        cache_dir: Path,
        lookups: TTLCache,
        max_loaded: int = 4,
        build: Callable[[Path, str], Detector] | None = None,
    ):
        self.default, self.cache_dir, self.lookups, self.max_loaded = default, Path(cache_dir), lookups, max_loaded
        self._build = build or self._student
        self._loaded: OrderedDict[str, Detector] = OrderedDict()
        self._broken: set[str] = set()
        self._lock = threading.Lock()

    def active_key(self, sessions, tenant_id: str) -> tuple[str, str] | None:
        """(key, artefact path) of the tenant's active detector, cached for the lookup TTL."""
        found = self.lookups.get(tenant_id)
        if found is MISSING:
            with sessions() as session:
                found = active_detector(session, tenant_id)
            self.lookups.put(tenant_id, found)
        return found

    def for_tenant(self, sessions, tenant_id: str) -> Detector:
        """The loaded detector to use for this tenant's photos."""
        active = self.active_key(sessions, tenant_id)
        if active is None or active[0] in self._broken:
            return self.default
        key, path = active
        with self._lock:
            detector = self._loaded.get(key)
            if detector is not None:
                self._loaded.move_to_end(key)
                return detector
            try:
                detector = self._build(Path(path), key)
                detector.load()
            except (ModelLoadError, OSError) as exc:
                log.error(
                    "detector %s of tenant %s does not load (%s); the configured detector serves", key, tenant_id, exc
                )
                self._broken.add(key)
                return self.default
            self._loaded[key] = detector
            while len(self._loaded) > self.max_loaded:
                self._loaded.popitem(last=False)
            return detector

    def _student(self, path: Path, key: str) -> Detector:
        from training.student import student_detector

        # Its own class names, no COCO allow-list (the item policy still puts the whole image first).
        return student_detector(path, cache_dir=self.cache_dir)
