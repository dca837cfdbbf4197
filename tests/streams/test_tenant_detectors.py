"""Each tenant's detector on the real Postgres: the active student, the configured one otherwise, a student that
cannot load stands aside for a while (never a failed search or ingest), and loading one never blocks another."""

from __future__ import annotations

import threading
import time

import pytest

from db import detectors, trained_models
from db.tenants import create_tenant
from streams import detectors as module
from streams.detectors import TenantDetectors
from vision.detector import WholeImageDetector

pytestmark = pytest.mark.integration


@pytest.fixture
def registry(sessions):
    with sessions.begin() as s:
        for tenant in ("acme", "globex"):
            create_tenant(s, tenant.title(), tenant)
            job = trained_models.start_job(s, tenant, method="detector", finetune=False, params={})
            key = f"detector-{tenant}@1"
            trained_models.finish_job(s, tenant, job.job_id, model_key=key, artefact_path=f"/d/{tenant}.pt", card={})
            detectors.activate_detector(s, tenant, key)
    return sessions


def test_a_student_that_fails_to_load_stands_aside_then_is_tried_again(registry, tmp_path, monkeypatch):
    default = WholeImageDetector()
    tries = []

    def build(path, key):
        tries.append(key)
        if len(tries) == 1:
            raise ValueError("corrupt head.npz")  # any exception: a bad artefact never fails a search
        return WholeImageDetector(trim=False)

    routed = TenantDetectors(default, cache_dir=tmp_path, ttl_s=0, build=build)
    assert routed.for_tenant(registry, "acme") is default
    assert routed.for_tenant(registry, "acme") is default and tries == ["detector-acme@1"]  # not retried at once
    monkeypatch.setattr(module, "BROKEN_RETRY_S", 0.0)
    routed._broken["detector-acme@1"] = 0.0  # its time is up
    student = routed.for_tenant(registry, "acme")
    assert student is not default and not student.trim and len(tries) == 2
    assert routed.for_tenant(registry, "acme") is student  # loaded once


def test_loading_one_tenants_student_does_not_block_another_tenant(registry, tmp_path):
    release = threading.Event()

    def build(path, key):
        if key == "detector-acme@1":
            release.wait(10)  # a slow load
        return WholeImageDetector(trim=False)

    routed = TenantDetectors(WholeImageDetector(), cache_dir=tmp_path, ttl_s=60, build=build)
    slow = threading.Thread(target=routed.for_tenant, args=(registry, "acme"))
    slow.start()
    time.sleep(0.2)
    started = time.perf_counter()
    routed.for_tenant(registry, "globex")
    waited = time.perf_counter() - started
    release.set()
    slow.join()
    assert waited < 5  # the slow load holds its own key's lock only (it would wait the full 10 s otherwise)
