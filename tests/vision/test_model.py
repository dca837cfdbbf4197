"""LazyModel: loading is lazy, happens once under concurrency, and a failure can be retried."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from vision.model import LazyModel, ModelLoadError


class Counting(LazyModel):
    name = "counting"

    def __init__(self, fail_first: bool = False):
        super().__init__()
        self.calls = 0
        self.fail_first = fail_first
        self._count_lock = threading.Lock()

    def _load(self) -> None:
        with self._count_lock:
            self.calls += 1
            calls = self.calls
        time.sleep(0.05)  # wide window for a race
        if self.fail_first and calls == 1:
            raise ModelLoadError("first attempt fails")


def test_load_is_lazy_and_happens_once_across_threads():
    model = Counting()
    assert not model.loaded and model.calls == 0
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: model.load(), range(16)))
    assert model.loaded and model.calls == 1
    model.load()
    assert model.calls == 1


def test_a_failed_load_is_retried_on_the_next_call():
    model = Counting(fail_first=True)
    with pytest.raises(ModelLoadError):
        model.load()
    assert not model.loaded
    model.load()
    assert model.loaded and model.calls == 2
