"""`vitrine model list|show` on the real Postgres: every tenant or one, jobs by id or key, artefact files."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from db import trained_models as repo
from db.tenants import create_tenant
from tests.helpers import settings_env
from vision.trained import write_artefact
from vitrine.cli import app

pytestmark = pytest.mark.integration
runner = CliRunner()

KEY = "supervised-head@3f2a9c1b7d10"
CARD = {
    "name": "supervised-head",
    "method": "supervised",
    "metrics": {"relevance": "category", "models": {"trained": {"mAP@5": 0.8312}, "pretrained": {"mAP@5": 0.7221}}},
}


@pytest.fixture
def registry(settings, sessions, monkeypatch):
    """acme: a ready model (trained twice), a failed job and a job whose trainer died; globex: one training."""
    for k, v in settings_env(settings).items():
        monkeypatch.setenv(k, v)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs (this machine's: the reaper only checks its own host's jobs)
    jobs = {}
    with sessions.begin() as s:
        create_tenant(s, "Acme", "acme")
        create_tenant(s, "Globex", "globex")
        for name in ("first", "second"):
            job = jobs[name] = repo.start_job(s, "acme", method="supervised", finetune=False, params={"seed": 0})
            repo.finish_job(s, "acme", job.job_id, model_key=KEY, artefact_path=f"/m/{KEY}.vtm", card=CARD)
        jobs["failed"] = repo.start_job(s, "acme", method="triplet", finetune=True, params={"bits": 32})
        repo.fail_job(s, "acme", jobs["failed"].job_id, "a single category: nothing to tell apart")
        jobs["dead"] = repo.start_job(s, "acme", method="design", finetune=False, params={}, log_path="/l/d.log")
        repo.set_pid(s, "acme", jobs["dead"].job_id, dead.pid)
        jobs["globex"] = repo.start_job(s, "globex", method="autoencoder", finetune=False, params={})
    return {name: job.job_id for name, job in jobs.items()}


def field(table: str, name: str) -> str | None:
    """The value of one `name value` line of a table."""
    found = re.search(rf"^{re.escape(name)} +(.*)$", table, re.M)
    return found and found.group(1)


def invoke(*args):
    result = runner.invoke(app, ["model", *args])
    return result.exit_code, result.output


def test_list_shows_every_tenant_or_one_newest_first_and_reaps_dead_trainers(registry):
    code, out = invoke("list", "--json")
    assert code == 0, out
    rows = json.loads(out)["models"]
    assert {r["job_id"] for r in rows} == set(registry.values())
    dead = next(r for r in rows if r["job_id"] == registry["dead"])
    assert dead["status"] == "failed" and dead["reason"] == (
        "the training process exited without a result (log: /l/d.log)"
    )
    code, out = invoke("list", "--tenant", "acme", "--json")
    acme = [r["job_id"] for r in json.loads(out)["models"]]
    assert acme == [registry[n] for n in ("dead", "failed", "second", "first")]

    code, table = invoke("list", "-t", "acme")
    lines = table.splitlines()
    assert code == 0 and lines[0].split()[:6] == ["job", "tenant", "method", "depth", "status", "created"]
    assert f"{KEY} mAP@5 0.831 (pretrained 0.722)" in lines[3]
    assert "finetune" in lines[2] and lines[2].endswith("a single category: nothing to tell apart")
    assert invoke("list", "-t", "nobody") == (0, "no training jobs for tenant nobody\n")


def test_show_finds_a_job_by_id_or_the_newest_model_by_key(registry):
    code, out = invoke("show", KEY, "--json")
    shown = json.loads(out)
    assert code == 0 and shown["job_id"] == registry["second"] and shown["card"] == CARD
    assert shown["artefact_path"] == f"/m/{KEY}.vtm" and shown["tenant"] == "acme"
    code, out = invoke("show", registry["failed"], "-t", "acme")
    assert code == 0 and field(out, "status") == "failed" and field(out, "params.bits") == "32"
    assert invoke("show", registry["globex"], "--tenant", "acme")[0] == 1  # another tenant's job
    code, out = invoke("show", "nope@000000000000")
    assert code == 1 and "no training job or model 'nope@000000000000'" in out


def test_show_prints_the_card_of_an_artefact_file_and_refuses_a_corrupt_one(registry, tmp_path):
    card = {"name": "design-head", "method": "design", "dim": 4, "input": {"size": 224, "preprocessing": "imagenet"}}
    card["backbone"] = {"name": "efficientnet-lite0", "model_key": "efficientnet-lite0@test"}
    head = {"w1": np.eye(4), "b1": np.zeros(4), "w2": np.eye(4), "b2": np.zeros(4)}
    path = write_artefact(tmp_path, card, head=head)
    code, out = invoke("show", str(path), "--json")
    shown = json.loads(out)
    assert code == 0 and shown["key"] == path.stem and shown["method"] == "design" and shown["path"] == str(path)
    code, out = invoke("show", str(path))
    assert code == 0 and field(out, "backbone.model_key") == "efficientnet-lite0@test"

    broken = tmp_path / "broken.vtm"
    broken.write_bytes(path.read_bytes()[:200])
    code, out = invoke("show", str(broken))
    assert code == 1 and out.startswith(f"error: {broken} is not a vitrine model artefact")
    code, out = invoke("show", str(tmp_path / "missing.vtm"))
    assert code == 1 and "model artefact not found" in out
