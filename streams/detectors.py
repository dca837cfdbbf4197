"""Which detector finds the items of a tenant's images: its active student, else the configured one.

Used by the worker (catalog photos) and the API (search by image). A tenant's active detector
(db/detectors.py) is looked up at most once per `ttl_s` (an activation made elsewhere reaches this
process within VITRINE_LOOKUP_CACHE_TTL_S); loaded students are kept by model key, the least recently
used one dropped past `max_loaded`. A student whose weights cannot load is logged once per key and the
configured detector serves instead, so a bad artefact never fails a search or an ingest.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from db.detectors import active_detector
from vision.detector import Detector
from vision.embedder import Embedder

log = logging.getLogger(__name__)

BROKEN_RETRY_S = 60.0  # a student that failed to load is tried again after this long


class TenantDetectors:
    """`for_tenant(session_factory, tenant_id) -> Detector`, loading each tenant's student once."""

    def __init__(
        self,
        default: Detector,
        *,
        cache_dir: Path,
        ttl_s: float = 2.0,
        max_loaded: int = 4,
        build: Callable[[Path, str], Detector] | None = None,
        embedder: Embedder | None = None,
    ):
        self.default, self.cache_dir, self.ttl_s, self.max_loaded = default, Path(cache_dir), ttl_s, max_loaded
        self._lookups: dict[str, tuple[float, tuple[str, str] | None]] = {}
        self._build = build or self._student
        self.embedder = embedder  # for a student whose boxes a class head names (training/hybrid.py)
        self._loaded: OrderedDict[str, Detector] = OrderedDict()
        self._broken: dict[str, float] = {}  # key -> until when the configured detector stands in
        self._loading: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def active_key(self, sessions, tenant_id: str) -> tuple[str, str] | None:
        """(key, artefact path) of the tenant's active detector, cached for `ttl_s`."""
        cached = self._lookups.get(tenant_id)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        with sessions() as session:
            found = active_detector(session, tenant_id)
        if len(self._lookups) > 10_000:  # tenant ids come from requests: keep the map bounded
            self._lookups.clear()
        self._lookups[tenant_id] = (time.monotonic() + self.ttl_s, found)
        return found

    def for_tenant(self, sessions, tenant_id: str) -> Detector:
        """The loaded detector to use for this tenant's photos."""
        active = self.active_key(sessions, tenant_id)
        if active is None:
            return self.default
        key, path = active
        with self._lock:
            detector = self._loaded.get(key)
            if detector is not None:
                self._loaded.move_to_end(key)
                return detector
            if self._broken.get(key, 0.0) > time.monotonic():
                return self.default
            key_lock = self._loading.setdefault(key, threading.Lock())
        # Loading takes seconds: under the key's own lock, so other tenants' searches and ingest go on.
        with key_lock:
            with self._lock:
                if key in self._loaded:
                    return self._loaded[key]
            try:
                detector = self._build(Path(path), key)
                detector.load()
            except Exception as exc:  # a missing, corrupt or foreign artefact: never a failed search or ingest
                log.error(
                    "detector %s of tenant %s does not load (%s); the configured detector serves for %.0f s",
                    key,
                    tenant_id,
                    exc,
                    BROKEN_RETRY_S,
                )
                with self._lock:
                    self._broken[key] = time.monotonic() + BROKEN_RETRY_S
                return self.default
            with self._lock:
                self._loaded[key] = detector
                self._broken.pop(key, None)
                while len(self._loaded) > self.max_loaded:
                    self._loaded.popitem(last=False)
            return detector

    def _student(self, path: Path, key: str) -> Detector:
        import json

        from training.hybrid import HEAD_FILE, ClassHead, HybridStudent
        from training.student import student_detector

        card_path = path.parent / "card.json"
        card = json.loads(card_path.read_text()) if card_path.is_file() else {}
        imgsz = int(((card.get("student") or {}).get("config") or {}).get("imgsz", 320))  # the size it was trained at
        serve = card.get("serve", "yolo") if self.embedder is not None else "yolo"
        # Its operating threshold, calibrated on its val scenes (training/hybrid.calibrate_min_score), replaces
        # VITRINE_DETECT_MIN_SCORE for its boxes; the YOLO keeps every box down to it.
        threshold = ((card.get("serve_min_score") or {}).get(serve) or {}).get("min_score")
        conf = 0.25 if threshold is None else max(0.001, min(0.25, float(threshold)))
        yolo = student_detector(path, cache_dir=self.cache_dir, imgsz=imgsz, conf=conf)
        # Its own class names, no COCO allow-list (the item policy still puts the whole image first).
        detector = (
            HybridStudent(yolo, self.embedder, ClassHead.load(path.parent / HEAD_FILE))
            if serve == "yolo+head"
            else yolo
        )
        detector.min_score = None if threshold is None else float(threshold)
        return detector
