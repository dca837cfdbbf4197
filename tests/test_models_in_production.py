"""A trained model goes into production on real parts: a `vitrine worker` re-embeds the catalog in the
background, new products get its vectors at ingest, and an experiment `baseline` vs `visual@<pretrained>` vs
`visual@<trained>` runs through a `vitrine api` process, with a report that shows all three arms.

The "trained" head has seeded random weights: this tests the plumbing; whether training helps is measured
by `vitrine model train` on held-out products (docs/training.md).
"""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from sqlalchemy import text

from db import trained_models
from db.tenants import create_tenant
from streams.embedded_broker import free_port
from tests.helpers import settings_env, wait_for
from vision.trained import write_artefact
from vitrine import procs
from vitrine.client import CatalogClient, StorefrontClient
from vitrine.sample_catalog import sample_event

pytestmark = pytest.mark.integration

PRETRAINED = "efficientnet-lite0@imagenet1k-0.1.0"


def head_artefact(directory) -> str:
    rng = np.random.default_rng(0)
    head = {
        "w1": (rng.normal(size=(1280, 64)) / 36).astype(np.float32),
        "b1": np.zeros(64, np.float32),
        "w2": (rng.normal(size=(64, 32)) / 8).astype(np.float32),
        "b2": np.zeros(32, np.float32),
    }
    card = {
        "name": "triplet-head",
        "method": "triplet",
        "dim": 32,
        "input": {"size": 224, "preprocessing": "imagenet"},
        "backbone": {"name": "efficientnet-lite0", "model_key": PRETRAINED},
    }
    return str(write_artefact(directory, card, head=head))


def count(sessions, sql: str, **params) -> int:
    with sessions() as s:
        return s.scalar(text(sql), params)


def test_baseline_vs_pretrained_vs_trained_end_to_end(settings, sessions, image_server, sample_images, tmp_path):
    env = {
        **settings_env(settings),
        "VITRINE_API_PORT": str(free_port()),
        "VITRINE_DEPLOYMENT_CACHE_TTL_S": "1",  # the final sweep waits this + 10 s
        "VITRINE_LOOKUP_CACHE_TTL_S": "0",
    }
    worker = procs.spawn(["worker"], env, tmp_path / "worker.log")
    api = procs.spawn(["api"], env, tmp_path / "api.log")
    base = f"http://127.0.0.1:{env['VITRINE_API_PORT']}"
    try:
        procs.wait_http(f"{base}/healthz", api, timeout_s=90, log_path=tmp_path / "api.log")
        with sessions.begin() as s:
            acme = create_tenant(s, "Acme", "acme")
        samples = {smp.id: smp for smp in sample_images[1]}
        first, last = list(samples)[:-1], list(samples)[-1]
        catalog = CatalogClient(base, "acme", acme.webhook_secret)
        assert catalog.send([sample_event(samples[i], "acme", image_server.base_url) for i in first]).status_code == 202
        wait_for(
            lambda: count(sessions, "SELECT count(*) FROM products WHERE indexed_at IS NOT NULL") == len(first),
            120,
            what="the catalog indexed",
        )
        with sessions.begin() as s:
            job = trained_models.start_job(s, "acme", method="triplet", finetune=False, params={})
            path = head_artefact(tmp_path / "models")
            key = path.rsplit("/", 1)[1].removesuffix(".vtm")
            trained_models.finish_job(s, "acme", job.job_id, model_key=key, artefact_path=path, card={})

        admin = httpx.Client(base_url=base, headers={"X-Vitrine-Admin-Key": acme.admin_key}, timeout=10)
        assert admin.post(f"/v1/models/{key}/deploy").status_code == 202

        def deployed():
            state = admin.get("/v1/deployments").json()["deployments"][0]
            assert state["status"] != "failed", state
            return state["status"] == "ready" and state

        state = wait_for(deployed, 90, interval_s=0.5, what="the worker's background re-embed")
        items = count(sessions, "SELECT count(*) FROM items WHERE model = :m", m=PRETRAINED)
        assert state["items_written"] == items == count(sessions, "SELECT count(*) FROM items WHERE model = :m", m=key)

        # A product indexed now gets the trained model's vectors in the same transaction as the backbone's.
        assert catalog.send(sample_event(samples[last], "acme", image_server.base_url)).status_code == 202
        wait_for(
            lambda: (
                count(
                    sessions,
                    "SELECT count(*) FROM items i JOIN products p ON p.id = i.product_id "
                    "WHERE p.external_id = :p AND i.model = :m",
                    p=last,
                    m=key,
                )
                > 0
            ),
            60,
            what="the new product's trained vectors",
        )

        arms = ["baseline", f"visual@{PRETRAINED}", f"visual@{key}"]
        body = {"key": "models", "arms": [{"name": a, "weight": w} for a, w in zip(arms, (0.34, 0.33, 0.33))]}
        created = admin.post("/v1/experiments", json=body)
        assert created.status_code == 201, created.text
        assert admin.post("/v1/experiments/models/start").status_code == 200

        shop = StorefrontClient(base, acme.storefront_key)
        served, served_to = {}, {}
        for i in range(45):
            answer = shop.recommendations("bus-front", user_id=f"shopper-{i}", limit=4).json()
            served.setdefault(answer["arm"], set()).add(answer["model"])
            served_to.setdefault(answer["arm"], set()).add(f"shopper-{i}")
            if i % 3 == 0 and answer["items"]:
                click = {
                    "event_id": f"click-{i}",
                    "type": "click",
                    "user_id": f"shopper-{i}",
                    "product_id": answer["items"][0]["product_id"],
                    "request_id": answer["request_id"],
                }
                assert shop.events(click).status_code == 202
        assert served == {"baseline": {None}, arms[1]: {PRETRAINED}, arms[2]: {key}}
        wait_for(
            lambda: count(sessions, "SELECT count(*) FROM interaction_events WHERE type = 'exposure'") == 45,
            60,
            what="45 exposures recorded",
        )
        exposures = "SELECT DISTINCT arm, payload->>'model' FROM interaction_events WHERE type = 'exposure'"
        with sessions() as s:
            by_arm = {arm: model for arm, model in s.execute(text(exposures)).all()}  # noqa: C416
        assert by_arm == {"baseline": None, arms[1]: PRETRAINED, arms[2]: key}

        report = admin.get("/v1/experiments/models/results").json()
        assert {a["name"]: a["users"] for a in report["arms"]} == {arm: len(served_to[arm]) for arm in arms}
        assert worker.poll() is None
    finally:
        procs.stop(api)
        procs.stop(worker)
