"""The life cycle shared by every vision model: lazy, locked, idempotent loading; typed errors."""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger(__name__)


class VisionError(RuntimeError):
    """Base of the errors vision raises about models (not about input images: see ImageError)."""


class ModelLoadError(VisionError):
    """Weights are missing, cannot be downloaded, or do not load; the message says what to do."""


class UnknownBackend(VisionError, ValueError):
    """A backend name that no registry knows."""


class LazyModel:
    """Loads its weights on first use, once, even when many threads call it at the same time."""

    name: str = ""

    def __init__(self) -> None:
        self._load_lock = threading.Lock()
        self._loaded = False

    @property
    def loaded(self) -> bool:
        return self._loaded

    def load(self) -> None:
        """Load the weights (no-op when already loaded); raises ModelLoadError on failure."""
        if self._loaded:
            return
        with self._load_lock:
            if self._loaded:
                return
            started = time.perf_counter()
            self._load()
            self._loaded = True
            log.info("loaded %s in %.2fs", self.describe(), time.perf_counter() - started)

    def describe(self) -> str:
        """One human line: which model this is and where its weights come from."""
        return self.name

    def _load(self) -> None:
        raise NotImplementedError
