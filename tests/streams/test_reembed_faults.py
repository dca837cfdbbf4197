"""Faults in the middle of a re-embed, on real processes: Postgres restarted under the workers' loop, and the
re-embedding process killed with SIGKILL. Both end with every vector written exactly once, and nothing served
before the deployment is complete."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest
from sqlalchemy import text

from db import deployments as repo
from db.embedded import EmbeddedPostgres
from db.migrate import upgrade
from db.session import create_db_engine, session_factory
from db.tenants import create_tenant
from streams.reembed import ModelCache, Reembedder
from tests.helpers import settings_env, wait_for
from tests.streams.deployment_helpers import BACKBONE, products, ready_model

pytestmark = pytest.mark.integration

N = 3000
PRETRAINED = "efficientnet-lite0@imagenet1k-0.1.0"


def state(sessions, key) -> tuple:
    with sessions() as s:
        dep = s.execute(text("SELECT status, items_done FROM model_deployments WHERE model_key = :k"), {"k": key}).one()
        written = s.scalar(text("SELECT count(*) FROM items WHERE model = :k"), {"k": key})
        distinct = s.scalar(
            text("SELECT count(*) FROM (SELECT DISTINCT image_id, kind, box FROM items WHERE model = :k) d"), {"k": key}
        )
    return dep.status, dep.items_done, written, distinct


def test_a_postgres_restart_mid_re_embed_is_waited_out_and_nothing_is_written_twice(tmp_path, state_dir):
    pg = EmbeddedPostgres(state_dir / f"own-pg-{tmp_path.name}").start()  # a server of our own, to restart
    stop = threading.Event()
    try:
        upgrade(pg.url)
        engine = create_db_engine(pg.url)
        sessions = session_factory(engine)
        with sessions.begin() as s:
            create_tenant(s, "Acme", "acme")
        with sessions.begin() as s:
            products(s, "acme", range(N))
            key = ready_model(s, "acme", tmp_path / "m")
            repo.deploy_trained(s, "acme", key, embedder_key=BACKBONE)
        runner = Reembedder(engine, sessions, ModelCache(tmp_path / "c"), page=20, pause_s=0.01, settle_s=0)
        loop = threading.Thread(target=runner.run_forever, args=(stop,), kwargs={"poll_s": 0.2}, daemon=True)
        loop.start()
        wait_for(lambda: state(sessions, key)[1] >= 200, 60, interval_s=0.05, what="some pages done")
        pg.stop()
        pg.start()
        wait_for(lambda: state(sessions, key)[0] == "ready", 120, interval_s=0.2, what="the deployment ready")
        assert state(sessions, key) == ("ready", N, N, N)
        with sessions() as s:
            assert set(repo.servable_models(s, "acme")) == {key}
    finally:
        stop.set()
        pg.stop()


def test_a_re_embedding_process_killed_with_sigkill_is_resumed_by_the_next_one(settings, sessions, tmp_path):
    with sessions.begin() as s:
        create_tenant(s, "Acme", "acme")
    with sessions.begin() as s:  # stored under the deployed embedder's key, as the CLI checks
        products(s, "acme", range(N), backbone=PRETRAINED)
        key = ready_model(s, "acme", tmp_path / "m", backbone=PRETRAINED)
    env = {**os.environ, **settings_env(settings), "VITRINE_REEMBED_PAGE": "10", "VITRINE_REEMBED_PAUSE_S": "0.02"}
    command = [sys.executable, "-m", "vitrine", "model", "reembed", key, "--tenant", "acme", "--settle-s", "0"]
    log_path = tmp_path / "first.log"
    with open(log_path, "wb") as log:
        first = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(
            lambda: first.poll() is None and _done(sessions, key) >= 300,
            120,
            interval_s=0.02,
            what=f"some pages committed by the first process (its output: {log_path})",
        )
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    except AssertionError:
        raise AssertionError(log_path.read_text()[-3000:]) from None
    finally:
        if first.poll() is None:
            first.kill()
    status, done, written, distinct = state(sessions, key)
    assert status == "embedding" and 300 <= done < N and written == distinct == done  # pages are all or nothing
    with sessions() as s:
        assert repo.servable_models(s, "acme") == {}  # nothing serves from a half-written model
    with sessions.begin() as s:  # the dead process's lease runs out (60 s; here at once)
        s.execute(text("UPDATE model_deployments SET lease_until = now() - interval '1 second'"))
    again = subprocess.run(command + ["--json"], env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert state(sessions, key) == ("ready", N, N, N)


def _done(sessions, key) -> int:
    with sessions() as s:
        return s.scalar(
            text("SELECT coalesce(max(items_done), 0) FROM model_deployments WHERE model_key = :k"), {"k": key}
        )
