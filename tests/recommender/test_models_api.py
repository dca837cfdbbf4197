"""The models admin API on the real broker and Postgres: starting a training job in its own process, one job
at a time, reading jobs and cards, tenant isolation, and bad input answered with a precise 4xx.

The training process is the edge: most tests replace `app.state.training_processes` with FakeProcesses;
one starts a real process and one checks the real liveness test on real processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select

from core.settings import Settings
from db import trained_models as repo
from db.models import TrainedModel
from db.tenants import create_tenant
from recommender.app import create_app
from recommender.training_jobs import TRAINER_NICENESS, LocalProcesses, settings_env
from tests.helpers import wait_for
from tests.recommender.helpers import put_product

pytestmark = pytest.mark.integration

CARD = {
    "name": "supervised-head",
    "method": "supervised",
    # The shape training/run.py writes: held-out scores per model on one split.
    "metrics": {
        "relevance": "category",
        "queries": 40,
        "models": {"trained": {"mAP@5": 0.83}, "pretrained": {"mAP@5": 0.72}},
    },
    "hyperparameters": {"epochs": 30},
}


class FakeProcesses:
    """Records what would be started; a pid runs until the test ends it."""

    def __init__(self):
        self.spawned: list[tuple[list[str], dict, Path]] = []
        self.running: set[int] = set()
        self.error: OSError | None = None

    def spawn(self, command, env, log_path) -> int:
        if self.error:
            raise self.error
        self.spawned.append((command, dict(env), log_path))
        pid = 90_000 + len(self.spawned)
        self.running.add(pid)
        return pid

    def alive(self, pid: int) -> bool:
        return pid in self.running


def catalog(s, tenant, model_key, sizes: dict[str, int]) -> None:
    """`sizes[category]` products with a stored vector of `model_key` per category."""
    for category, n in sizes.items():
        for i in range(n):
            put_product(s, tenant, f"{category}-{i}", [1, i, 0, 0], category=category, model_key=model_key)


@pytest.fixture
def api(settings, sessions):
    """Two tenants; acme has 22 indexed products in two categories, globex none. Processes are fake."""
    app = create_app(settings)
    app.state.training_processes = FakeProcesses()
    with sessions.begin() as s:
        acme = create_tenant(s, "Acme", "acme")
        globex = create_tenant(s, "Globex", "globex")
        catalog(s, "acme", app.state.embedder.model_key, {"shirts": 12, "shoes": 10})
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, {"X-Vitrine-Admin-Key": acme.admin_key}, {"X-Vitrine-Admin-Key": globex.admin_key}


def job_row(sessions, job_id) -> TrainedModel:
    with sessions() as s:
        return s.scalar(select(TrainedModel).where(TrainedModel.job_id == job_id))


def test_a_job_starts_its_trainer_detached_and_is_listed(api, settings, sessions):
    client, acme, _ = api
    body = {"method": "triplet", "finetune": True, "holdout": 0.3, "seed": 7, "epochs": 5, "bits": 48}
    r = client.post("/v1/models", headers=acme, json=body)
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    assert r.json() == {"job_id": job_id, "status": "training", "links": {"self": f"/v1/models/{job_id}"}}

    [(command, env, log_path)] = client.app.state.training_processes.spawned
    assert command == [
        sys.executable, "-m", "vitrine", "model", "train", "--tenant", "acme", "--job-id", job_id,
        "--method", "triplet", "--holdout", "0.3", "--seed", "7", "--finetune", "--epochs", "5", "--bits", "48",
    ]  # fmt: skip
    # The trainer gets the API's own settings, whatever environment the API was started from.
    assert env["VITRINE_DATABASE_URL"] == settings.database_url and env["VITRINE_TOPIC_PREFIX"] == settings.topic_prefix
    assert log_path == settings.data_dir / "models" / "jobs" / f"{job_id}.log"
    row = job_row(sessions, job_id)
    assert (row.pid, row.log_path, row.status, row.finetune) == (90_001, str(log_path), "training", True)
    assert row.params == {"holdout": 0.3, "seed": 7, "epochs": 5, "bits": 48}

    listed = client.get("/v1/models", headers=acme).json()
    assert [(m["job_id"], m["method"], m["status"], m["model_key"]) for m in listed] == [
        (job_id, "triplet", "training", None)
    ]
    detail = client.get(f"/v1/models/{job_id}", headers=acme).json()
    assert detail["params"] == row.params and detail["card"] is None and "log_path" not in detail


def test_one_job_at_a_time_and_a_dead_trainer_is_reported_failed(api, sessions):
    client, acme, _ = api
    first = client.post("/v1/models", headers=acme, json={"method": "supervised"}).json()["job_id"]
    second = client.post("/v1/models", headers=acme, json={"method": "design"})
    assert second.status_code == 409 and second.json()["job_id"] == first
    assert first in second.json()["detail"]
    assert len(client.app.state.training_processes.spawned) == 1

    client.app.state.training_processes.running.clear()  # the trainer died without a word
    shown = client.get(f"/v1/models/{first}", headers=acme).json()
    assert shown["status"] == "failed" and shown["model_key"] is None
    assert shown["reason"] == f"the training process exited without a result (log: {job_row(sessions, first).log_path})"
    again = client.post("/v1/models", headers=acme, json={"method": "design"})
    assert again.status_code == 202  # the dead job no longer holds the slot


def test_a_ready_model_shows_its_card_and_metrics_by_job_or_key(api, sessions):
    client, acme, _ = api
    job_id = client.post("/v1/models", headers=acme, json={"method": "supervised"}).json()["job_id"]
    key = "supervised-head@3f2a9c1b7d10"
    card = {**CARD, "key": key, "path": "/m/x.vtm"}  # as vision.trained.read_card gives it
    with sessions.begin() as s:  # what the trainer does when it is done
        repo.finish_job(s, "acme", job_id, model_key=key, artefact_path="/m/x.vtm", card=card)
    [listed] = client.get("/v1/models", headers=acme).json()
    assert listed["status"] == "ready" and listed["metrics"] == CARD["metrics"] and listed["finished_at"]
    by_key = client.get(f"/v1/models/{key}", headers=acme).json()
    assert by_key["job_id"] == job_id and "artefact_path" not in by_key
    assert by_key["card"] == {**CARD, "key": key}  # the server path is left out


def test_another_tenants_jobs_and_models_are_not_found(api, sessions):
    client, acme, globex = api
    job_id = client.post("/v1/models", headers=acme, json={"method": "supervised"}).json()["job_id"]
    with sessions.begin() as s:
        repo.finish_job(
            s, "acme", job_id, model_key="supervised-head@3f2a9c1b7d10", artefact_path="/m/x.vtm", card=CARD
        )
    for ref in (job_id, "supervised-head@3f2a9c1b7d10"):
        r = client.get(f"/v1/models/{ref}", headers=globex)
        assert r.status_code == 404 and r.json() == {"detail": f"no training job or model {ref!r}"}
    assert client.get("/v1/models", headers=globex).json() == []
    assert client.get("/v1/models").status_code == 401
    assert client.post("/v1/models", json={"method": "supervised"}).status_code == 401


INVALID = [
    ({"method": "supervised", "bits": 32}, ["body"], "bits is for the triplet method only"),
    ({"method": "triplet", "bits": 40}, ["body", "bits"], "Input should be 32, 48 or 64"),
    ({"method": "triplet", "holdout": 0.6}, ["body", "holdout"], "less than or equal to 0.5"),
    ({"method": "triplet", "epochs": 0}, ["body", "epochs"], "greater than or equal to 1"),
    ({"method": "magic"}, ["body", "method"], "Input should be 'supervised', 'triplet'"),
    ({"method": "design", "epoch": 3}, ["body", "epoch"], "Extra inputs are not permitted"),
]


def test_invalid_requests_are_precise_422s_and_start_nothing(api):
    client, acme, _ = api
    for body, loc, msg in INVALID:
        r = client.post("/v1/models", headers=acme, json=body)
        assert r.status_code == 422, body
        [error] = r.json()["detail"]
        assert error["loc"] == loc and msg in error["msg"], (body, error)
    assert client.app.state.training_processes.spawned == [] and client.get("/v1/models", headers=acme).json() == []


def test_a_catalog_too_small_to_split_is_a_422_naming_what_is_missing(api, sessions):
    client, _, globex = api
    model_key = client.app.state.embedder.model_key
    with sessions.begin() as s:
        catalog(s, "globex", model_key, {"shirts": 3})
        catalog(s, "globex", "other-model@1", {"shoes": 20})  # vectors of another embedder do not count
    r = client.post("/v1/models", headers=globex, json={"method": "supervised"})
    assert r.status_code == 422 and r.json() == {
        "detail": "catalog too small to split: 3 products with vectors, need at least 10"
    }
    with sessions.begin() as s:
        catalog(s, "globex", model_key, {"shirts": 10, "hats": 1})
    r = client.post("/v1/models", headers=globex, json={"method": "supervised"})
    assert r.status_code == 422 and r.json()["detail"] == (
        "too few categories to learn from: need at least 2 categories with 2 or more products with vectors each, "
        "found 1: shirts (10)"
    )
    assert client.app.state.training_processes.spawned == [] and client.get("/v1/models", headers=globex).json() == []


def test_a_catalog_whose_split_leaves_too_few_held_out_products_is_refused_before_the_202():
    from db.trained_models import TrainingDataSummary
    from recommender.training_jobs import NotEnoughData, check_training_data

    # 20 % of 6 is one product per category: 2 held out, too few to judge a model (the trainer's own rule).
    with pytest.raises(NotEnoughData, match="holding out 0.2 of 12 products leaves fewer than 4"):
        check_training_data(TrainingDataSummary(products=12, categories={"shirts": 6, "shoes": 6}))
    check_training_data(TrainingDataSummary(products=12, categories={"shirts": 6, "shoes": 6}), holdout=0.34)


def test_a_trainer_that_cannot_start_is_a_503_and_a_failed_job(api):
    client, acme, _ = api
    client.app.state.training_processes.error = PermissionError(13, "Permission denied")
    r = client.post("/v1/models", headers=acme, json={"method": "autoencoder"})
    assert r.status_code == 503 and "could not start" in r.json()["detail"]
    [job] = client.get("/v1/models", headers=acme).json()
    assert job["status"] == "failed" and job["reason"].startswith("the training process could not start")


def test_deep_json_and_nul_bytes_are_422(api):
    client, acme, _ = api
    deep = b"[" * 50_000 + b"]" * 50_000
    assert (
        client.post("/v1/models", headers={**acme, "Content-Type": "application/json"}, content=deep).status_code == 422
    )
    assert client.get("/v1/models/a%00b", headers=acme).status_code == 422


def test_a_real_trainer_process_starts_detached_and_a_dead_one_is_reported(settings, sessions):
    """The real spawn: `vitrine model train` runs as a process of its own, its pid and log are recorded;
    killed before it could finish, the job reads failed on the next look."""
    app = create_app(settings)
    with sessions.begin() as s:
        creds = create_tenant(s, "Acme", "acme")
        catalog(s, "acme", app.state.embedder.model_key, {"shirts": 10, "shoes": 10})
    headers = {"X-Vitrine-Admin-Key": creds.admin_key}
    with TestClient(app) as client:
        job_id = client.post("/v1/models", headers=headers, json={"method": "supervised"}).json()["job_id"]
        row = job_row(sessions, job_id)
        assert row.pid and row.pid != os.getpid() and Path(row.log_path).is_file()
        try:
            assert os.getpgid(row.pid) == row.pid  # a session and process group of its own
            os.killpg(row.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # it had already exited on its own: the same outcome for the registry
        wait_for(lambda: not app.state.training_processes.alive(row.pid), 30, what="the trainer to be gone")
        shown = client.get(f"/v1/models/{job_id}", headers=headers).json()
    assert shown["status"] == "failed" and shown["reason"].startswith("the training process exited without a result")


def test_liveness_means_a_running_trainer_not_a_zombie_or_another_program(tmp_path):
    processes = LocalProcesses()
    pid = processes.spawn(
        [sys.executable, "-c", "import time; time.sleep(60)", "model", "train"], os.environ, tmp_path / "t.log"
    )
    try:
        assert processes.alive(pid) and psutil.Process(pid).nice() == TRAINER_NICENESS
        assert not processes.alive(os.getpid())  # a live process, but no trainer (e.g. a reused pid)
    finally:
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not processes.alive(pid), 10, what="the killed trainer to read dead")
    zombie = subprocess.Popen([sys.executable, "-c", "pass", "model", "train"])  # exits; nobody waits for it
    wait_for(lambda: psutil.Process(zombie.pid).status() == psutil.STATUS_ZOMBIE, 10, what="a zombie")
    assert not processes.alive(zombie.pid)
    zombie.wait()


def test_the_child_environment_rebuilds_the_same_settings(settings, monkeypatch):
    settings = settings.model_copy(update={"fetch_allow_private": True, "admin_key": SecretStr("s3cret")})
    for name in list(os.environ):
        if name.startswith("VITRINE_"):
            monkeypatch.delenv(name)
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)
    rebuilt = Settings(_env_file=None)
    assert rebuilt.model_dump() == Settings.model_validate(settings.model_dump()).model_dump()
    assert rebuilt.admin_key.get_secret_value() == "s3cret"
