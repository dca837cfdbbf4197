"""Training jobs started from the admin API: check the tenant's indexed data, register the job, and run
`vitrine model train` in a process of its own, so training never blocks ingestion or serving.

The process is the edge: `TrainingProcesses` starts one and says whether one still runs; the app holds
one in `app.state.training_processes` (tests put a fake there). The trainer finishes or fails its job
in the registry itself; a trainer that dies first is marked failed by `reap_dead_jobs` when the
tenant next lists or reads its jobs.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import psutil
from pydantic import SecretStr
from sqlalchemy.orm import Session

from core.settings import Settings
from db.models import TrainedModel
from db.trained_models import TrainingDataSummary, fail_job, reap_dead_jobs, set_pid, start_job, training_data_summary
from training.data import MIN_TEST_QUERIES, enough_held_out

log = logging.getLogger(__name__)

METHODS = ("supervised", "triplet", "design", "autoencoder")
BITS = (32, 48, 64)
# Below these a held-out split has nothing to learn from or nothing to evaluate on.
MIN_PRODUCTS = 10
MIN_CATEGORIES = 2
MIN_PER_CATEGORY = 2
# The trainer yields the CPU to the API and the worker on the same cores.
TRAINER_NICENESS = 10


class NotEnoughData(ValueError):
    """The tenant's indexed catalog cannot be split for training; the message says what is missing."""


class TrainingStartError(RuntimeError):
    """The training process could not be started (the job is recorded as failed with the reason)."""


@dataclass(frozen=True)
class TrainingRequest:
    """What the admin asked for: the method and its hyperparameters."""

    method: str
    finetune: bool = False
    holdout: float = 0.2
    seed: int = 0
    epochs: int | None = None
    bits: int | None = None

    def params(self) -> dict:
        """The hyperparameters as stored with the job."""
        return {"holdout": self.holdout, "seed": self.seed, "epochs": self.epochs, "bits": self.bits}

    def command(self, tenant_id: str, job_id: str) -> list[str]:
        """The `vitrine model train` command line of this request."""
        cmd = [sys.executable, "-m", "vitrine", "model", "train", "--tenant", tenant_id, "--job-id", job_id]
        cmd += ["--method", self.method, "--holdout", f"{self.holdout:g}", "--seed", str(self.seed)]
        cmd += ["--finetune"] if self.finetune else []
        cmd += ["--epochs", str(self.epochs)] if self.epochs is not None else []
        cmd += ["--bits", str(self.bits)] if self.bits is not None else []
        return cmd


class TrainingProcesses(Protocol):
    """Starts training processes and tells whether one still runs (the process edge)."""

    def spawn(self, command: list[str], env: Mapping[str, str], log_path: Path) -> int:
        """Start `command` detached, output to `log_path`; returns its pid."""

    def alive(self, pid: int) -> bool:
        """Whether the training process `pid` still runs."""


class LocalProcesses:
    """Training processes on this machine: detached children, watched by a thread that reaps them."""

    def spawn(self, command: list[str], env: Mapping[str, str], log_path: Path) -> int:
        """Start `command` in its own session with stdout and stderr to `log_path`; returns its pid."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(
                command,
                env=dict(env),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a signal to the API's process group does not stop the trainer
            )
        try:
            # Before the child's interpreter has started any thread: every thread it makes inherits this.
            os.setpriority(os.PRIO_PROCESS, proc.pid, TRAINER_NICENESS)
        except OSError as exc:
            log.warning("training process %d keeps its priority: %s", proc.pid, exc)
        # Wait for it, so it does not linger as a zombie once done, and log how it ended.
        threading.Thread(target=_watch, args=(proc, log_path), name=f"trainer-{proc.pid}", daemon=True).start()
        return proc.pid

    def alive(self, pid: int) -> bool:
        """Whether `pid` is a running `vitrine model train` (not a zombie, not a program that reused the pid)."""
        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                return False
            cmdline = proc.cmdline()
        except psutil.NoSuchProcess:  # ZombieProcess included
            return False
        except psutil.AccessDenied:  # another user's process: cannot tell, so do not declare it dead
            return True
        return "model" in cmdline and "train" in cmdline


def _watch(proc: subprocess.Popen, log_path: Path) -> None:
    code = proc.wait()
    (log.info if code == 0 else log.warning)("training process %d exited with %d (log: %s)", proc.pid, code, log_path)


def settings_env(settings: Settings) -> dict[str, str]:
    """The VITRINE_* environment that gives a child process exactly these settings."""
    env = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (list, dict)):
            value = json.dumps(value)
        env[f"VITRINE_{name.upper()}"] = str(value)
    return env


def check_training_data(summary: TrainingDataSummary, holdout: float = 0.2) -> None:
    """NotEnoughData unless the catalog has enough products and categories to split and learn from."""
    if summary.products < MIN_PRODUCTS:
        raise NotEnoughData(
            f"catalog too small to split: {summary.products} products with vectors, need at least {MIN_PRODUCTS}"
        )
    usable = {c: n for c, n in summary.categories.items() if c is not None and n >= MIN_PER_CATEGORY}
    if len(usable) < MIN_CATEGORIES:
        found = ", ".join(f"{c} ({n})" for c, n in sorted(usable.items())) or "none"
        raise NotEnoughData(
            f"too few categories to learn from: need at least {MIN_CATEGORIES} categories with "
            f"{MIN_PER_CATEGORY} or more products with vectors each, found {len(usable)}: {found}"
        )
    # The trainer's own split rule (training/data.py): refuse here what it would refuse after the 202.
    if not enough_held_out(list(summary.categories.values()), holdout):
        raise NotEnoughData(
            f"catalog too small to split: holding out {holdout:g} of {summary.products} products leaves fewer "
            f"than {MIN_TEST_QUERIES} to evaluate on; raise the holdout or add products"
        )


def job_log_path(settings: Settings, job_id: str) -> Path:
    """Where the training process of `job_id` writes its output."""
    return settings.data_dir / "models" / "jobs" / f"{job_id}.log"


def start_training(
    session: Session,
    tenant_id: str,
    request: TrainingRequest,
    *,
    settings: Settings,
    processes: TrainingProcesses,
    model_key: str,
) -> TrainedModel:
    """Check the data (vectors of `model_key`), register the job and start its process; the caller commits.

    NotEnoughData, JobAlreadyRunning (db.trained_models) or TrainingStartError. The job row and its pid
    are committed together, after the process started: a crash in between leaves no job that claims to
    train with no process behind it (the orphaned trainer then finds no job and fails).
    """
    reap_dead_jobs(session, tenant_id, processes.alive)  # a crashed trainer must not hold the tenant's slot
    check_training_data(training_data_summary(session, tenant_id, model_key), request.holdout)
    job = start_job(session, tenant_id, method=request.method, finetune=request.finetune, params=request.params())
    log_path = job_log_path(settings, job.job_id)
    try:
        pid = processes.spawn(
            request.command(tenant_id, job.job_id), {**os.environ, **settings_env(settings)}, log_path
        )
    except OSError as exc:
        fail_job(session, tenant_id, job.job_id, f"the training process could not start: {exc}")
        raise TrainingStartError(f"the training process could not start: {exc}") from exc
    set_pid(session, tenant_id, job.job_id, pid, log_path=str(log_path))
    log.info("tenant %s: training job %s (%s) started as process %d", tenant_id, job.job_id, request.method, pid)
    return job
