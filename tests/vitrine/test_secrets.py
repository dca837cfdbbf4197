"""No secret in any output of a full run: `vitrine up`, `config`, the api and the worker (verbose), real traffic."""

from __future__ import annotations

import signal
import subprocess

import httpx
import pytest
from sqlalchemy.engine import make_url

from db.tenants import create_tenant
from streams.embedded_broker import free_port
from tests.helpers import wait_for
from tests.vitrine.helpers import start_up, vitrine
from vitrine import procs
from vitrine.client import CatalogClient, StorefrontClient
from vitrine.sample_catalog import sample_event

pytestmark = pytest.mark.integration

DB_PASSWORD = "pg-Pa55word-7f3a"  # the embedded Postgres trusts local connections: any password connects
ADMIN_KEY = "operator-key-9c1e2d"


def test_a_full_run_prints_and_logs_no_secret(postgres, sessions, database_url, image_server, sample_images, tmp_path):
    url = make_url(database_url).set(password=DB_PASSWORD).render_as_string(hide_password=False)
    env = {
        "VITRINE_DATA_DIR": str(tmp_path / "data"),
        "VITRINE_DATABASE_URL": url,
        "VITRINE_ADMIN_KEY": ADMIN_KEY,
        "VITRINE_BROKER_STORAGE": "memory",
        "VITRINE_API_PORT": str(free_port()),
        "VITRINE_WORKER_WEB_PORT": str(free_port()),
        "VITRINE_TOPIC_PARTITIONS": "1",
        "VITRINE_FETCH_ALLOW_HOSTS": "127.0.0.1",
    }
    with sessions.begin() as s:
        creds = create_tenant(s, "Acme", "acme", default_arm="visual")
    secrets = {
        "database password": DB_PASSWORD,
        "operator admin key": ADMIN_KEY,
        "storefront key": creds.storefront_key,
        "tenant admin key": creds.admin_key,
        "webhook secret": creds.webhook_secret,
    }
    outputs: dict[str, str] = {}
    up, outputs["up"] = start_up(env)
    api = worker = None
    try:
        for args in (["config"], ["config", "--json"]):
            done = vitrine(*args, env=env)
            assert done.returncode == 0, done.stderr
            outputs[" ".join(args)] = done.stdout + done.stderr
        assert "VITRINE_DATABASE_URL" in outputs["config"] and ":***@" in outputs["config"]
        worker = procs.spawn(["worker", "--verbose"], env, tmp_path / "worker.log")
        api = procs.spawn(["api", "--verbose"], env, tmp_path / "api.log")
        base = f"http://127.0.0.1:{env['VITRINE_API_PORT']}"
        procs.wait_http(f"{base}/healthz", api, timeout_s=90, log_path=tmp_path / "api.log")

        sample = next(smp for smp in sample_images[1] if smp.id == "bus-front")
        event = sample_event(sample, "acme", image_server.base_url)
        assert CatalogClient(base, "acme", creds.webhook_secret).send(event).status_code == 202
        assert CatalogClient(base, "acme", "whsec_wrong").send(event).status_code == 401  # a refusal is logged too
        shop = StorefrontClient(base, creds.storefront_key)
        wait_for(
            lambda: shop.recommendations("bus-front", user_id="u1").status_code == 200,
            120,
            interval_s=0.5,
            what="the product to be served",
        )
        click = {"event_id": "c1", "type": "click", "user_id": "u1", "product_id": "bus-front"}
        assert shop.events(click).status_code == 202
        for key in (creds.admin_key, ADMIN_KEY):
            httpx.get(f"{base}/v1/experiments", headers={"X-Vitrine-Admin-Key": key}, timeout=10)
        assert httpx.get(f"http://127.0.0.1:{env['VITRINE_WORKER_WEB_PORT']}/metrics/", timeout=10).is_success
    finally:
        for proc in (api, worker):
            if proc is not None:
                procs.stop(proc)
        up.send_signal(signal.SIGINT)
        try:
            rest, _ = up.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            up.kill()
            rest, _ = up.communicate()
        outputs["up"] += rest
    outputs["api"] = (tmp_path / "api.log").read_text()
    outputs["worker"] = (tmp_path / "worker.log").read_text()
    assert "POST /v1/catalog/events" in outputs["api"] and "ready" in outputs["up"]  # the logs are the real ones
    leaks = [(what, name) for name, text in outputs.items() for what, secret in secrets.items() if secret in text]
    assert not leaks, leaks
