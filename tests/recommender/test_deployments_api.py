"""Models in production through the API, on the real Postgres: deploy a trained head, watch its re-embed,
experiments whose arms name models, storefront answers and exposures that say which model served,
activation and rollback, and the refusals (unknown, another tenant's, not ready) as precise 4xx."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from kafka import KafkaConsumer
from sqlalchemy import text

from db.tenants import create_tenant
from recommender.app import create_app
from streams.reembed import ModelCache, Reembedder
from streams.topics import INTERACTIONS
from tests.helpers import wait_for
from tests.recommender.helpers import rec
from tests.streams.deployment_helpers import DIM_IN, products, ready_model, ready_tower, tower_artefact

pytestmark = pytest.mark.integration


@pytest.fixture
def api(settings, sessions, tmp_path):
    """acme: 60 products with 4-d vectors stored under the API embedder's key and a ready head; globex: none."""
    app = create_app(settings)
    embedder_key = app.state.embedder.model_key
    app.state.arms["visual"].dim = DIM_IN  # the test catalog's vectors are 4-d, stored under the embedder's key
    with sessions.begin() as s:
        acme = create_tenant(s, "Acme", "acme")
        globex = create_tenant(s, "Globex", "globex")
    with sessions.begin() as s:
        products(s, "acme", range(60), backbone=embedder_key)
        key = ready_model(s, "acme", tmp_path / "m", backbone=embedder_key)
        other = ready_model(s, "globex", tmp_path / "g", backbone=embedder_key, seed=9)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield {
            "client": client,
            "acme": {"X-Vitrine-Admin-Key": acme.admin_key},
            "globex": {"X-Vitrine-Admin-Key": globex.admin_key},
            "shop": acme.storefront_key,
            "key": key,
            "other": other,
            "pretrained": embedder_key,
            "settings": settings,
        }


def run_workers(db_engine, sessions, tmp_path) -> None:
    """What the workers' background thread does, run here to the end."""
    Reembedder(db_engine, sessions, ModelCache(tmp_path / "cache"), page=25, pause_s=0, settle_s=0).run_until_idle()


def experiment(client, headers, key, arms):
    body = {"key": key, "arms": [{"name": a, "weight": round(1 / len(arms), 6)} for a in arms]}
    body["arms"][-1]["weight"] = round(1 - sum(a["weight"] for a in body["arms"][:-1]), 6)
    return client.post("/v1/experiments", headers=headers, json=body)


def test_a_deployed_model_serves_its_arm_and_every_exposure_names_its_model(api, db_engine, sessions, tmp_path):
    c, acme, key, pretrained = api["client"], api["acme"], api["key"], api["pretrained"]
    r = c.post(f"/v1/models/{key}/deploy", headers=acme)
    assert r.status_code == 202, r.text
    assert (r.json()["status"], r.json()["phase"], r.json()["items_total"]) == ("embedding", "scan", 60)
    assert c.post(f"/v1/models/{key}/deploy", headers=acme).status_code == 200  # asked twice: unchanged

    # Not ready yet: no experiment may name it, and it cannot be activated.
    early = experiment(c, acme, "e0", ["baseline", f"visual@{key}"])
    assert early.status_code == 422 and "still re-embedding" in early.json()["detail"]
    assert c.post(f"/v1/models/{key}/activate", headers=acme).status_code == 409

    run_workers(db_engine, sessions, tmp_path)
    state = c.get("/v1/deployments", headers=acme).json()
    assert state["active_model"] == pretrained and state["previous_model"] is None
    [dep] = state["deployments"]
    assert (dep["model_key"], dep["status"], dep["progress"], dep["items_written"]) == (key, "ready", 1.0, 60)

    arms = ["baseline", f"visual@{pretrained}", f"visual@{key}"]
    created = experiment(c, acme, "three", arms)
    assert created.status_code == 201, created.text
    assert c.post("/v1/experiments/three/start", headers=acme).status_code == 200
    served, lists = {}, {}
    for i in range(60):
        body = rec(c, api["shop"], "p3", user=f"u{i}").json()
        served.setdefault(body["arm"], set()).add(body["model"])
        lists[body["arm"]] = [it["product_id"] for it in body["items"]]
        if body["arm"] != "baseline":
            assert body["fallback"] is None and len(body["items"]) == 10
    assert served == {"baseline": {None}, f"visual@{pretrained}": {pretrained}, f"visual@{key}": {key}}
    # The trained head ranks with its own vectors, not the pretrained ones.
    assert lists[f"visual@{key}"] != lists[f"visual@{pretrained}"]

    # Every exposure, sent through the real broker, records the model that ranked its list.
    consumer = KafkaConsumer(
        api["settings"].topic(INTERACTIONS.name),
        bootstrap_servers=api["settings"].kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=2000,
    )
    seen: dict[str, set] = {}

    def all_exposures():
        for m in consumer:
            event = json.loads(m.value)
            seen.setdefault(event["arm"], set()).add(event["payload"]["model"])
        return seen == served

    wait_for(all_exposures, timeout_s=30, what="the exposures on the interactions topic")
    consumer.close()


def test_activation_and_rollback_switch_the_plain_visual_arm(api, db_engine, sessions, tmp_path):
    c, acme, key, pretrained = api["client"], api["acme"], api["key"], api["pretrained"]
    with sessions.begin() as s:
        s.execute(text("UPDATE tenants SET default_arm = 'visual' WHERE id = 'acme'"))
    c.app.state.tenant_cache.clear()
    assert rec(c, api["shop"], "p1").json()["model"] == pretrained
    assert c.post("/v1/deployments/rollback", headers=acme).status_code == 409  # nothing to roll back to
    c.post(f"/v1/models/{key}/deploy", headers=acme)
    run_workers(db_engine, sessions, tmp_path)

    r = c.post(f"/v1/models/{key}/activate", headers=acme)
    assert r.status_code == 200 and (r.json()["active_model"], r.json()["previous_model"]) == (key, pretrained)
    c.app.state.tenant_cache.clear()  # what the lookup TTL (2 s) does on its own
    assert rec(c, api["shop"], "p1").json()["model"] == key
    busy = c.post(f"/v1/models/{key}/retire", headers=acme)
    assert busy.status_code == 409 and "active model" in busy.text  # retiring what serves is refused
    back = c.post("/v1/deployments/rollback", headers=acme).json()
    assert (back["active_model"], back["previous_model"]) == (pretrained, key)
    c.app.state.tenant_cache.clear()
    assert rec(c, api["shop"], "p1").json()["model"] == pretrained

    assert c.post(f"/v1/models/{key}/retire", headers=api["globex"]).status_code == 404  # not globex's
    retired = c.post(f"/v1/models/{key}/retire", headers=acme)
    assert retired.status_code == 202 and retired.json()["status"] == "retiring"
    state = c.get("/v1/deployments", headers=acme).json()
    assert state["previous_model"] is None and [d["status"] for d in state["deployments"]] == ["retiring"]
    refused = experiment(c, acme, "after", ["baseline", f"visual@{key}"])
    assert refused.status_code == 422 and "being retired" in refused.text


def test_refusals_are_precise_and_tenant_scoped(api, sessions):
    c, acme, globex = api["client"], api["acme"], api["globex"]
    other = api["other"]
    cases = [
        (c.post(f"/v1/models/{other}/deploy", headers=acme), 404, "no training job or model"),  # globex's model
        (c.post("/v1/models/nope@000000000000/deploy", headers=acme), 404, "no training job or model"),
        (c.post(f"/v1/models/{api['key']}/deploy", headers=acme, json={"index_kind": "pq"}), 422, "index_kind"),
        (c.post(f"/v1/models/{api['key']}/activate", headers=acme), 404, "not deployed"),
        (c.post(f"/v1/models/{api['key']}/activate", headers=globex), 404, "not deployed"),
        (experiment(c, acme, "x1", ["baseline", "visual@nope@000000000000"]), 422, "not deployed for this tenant"),
        (experiment(c, acme, "x2", ["baseline", f"visual@{other}"]), 422, "not deployed for this tenant"),
        (experiment(c, acme, "x3", ["baseline", "visual@bad key!"]), 422, "arms"),
        (experiment(c, acme, "x4", ["baseline", "baseline@x"]), 422, "arms"),
    ]
    for response, status, words in cases:
        assert response.status_code == status, response.text
        assert words in response.text, response.text
    with sessions() as s:  # nothing was stored by any of them
        assert s.execute(text("SELECT count(*) FROM model_deployments")).scalar() == 0
        assert s.execute(text("SELECT count(*) FROM experiments")).scalar() == 0
    # A model key longer than the arm column allows.
    long = experiment(c, acme, "x5", ["baseline", "visual@" + "k" * 60])
    assert long.status_code == 422


def test_an_arm_whose_model_is_not_ready_falls_back_to_the_baseline(api, sessions):
    c, key = api["client"], api["key"]
    with sessions.begin() as s:  # an experiment stored before its model's deployment failed
        s.execute(
            text(
                "INSERT INTO experiments (tenant_id, key, placement, status, arms, traffic_fraction, salt, "
                "hash_version, primary_metric, guardrails, started_at) VALUES ('acme', 'gone', 'similar', 'running', "
                "CAST(:arms AS jsonb), 1.0, 's', 1, 'ctr', '[]', now())"
            ),
            {"arms": f'[{{"name": "visual@{key}", "weight": 1.0}}, {{"name": "baseline", "weight": 0.0}}]'},
        )
    body = rec(c, api["shop"], "p2").json()
    assert body["arm"] == f"visual@{key}" and body["fallback"] == "model_not_ready" and body["model"] is None
    assert len(body["items"]) == 10  # the shopper still gets recommendations


def test_a_fine_tuned_tower_is_deployed_from_the_images_and_says_so(api, sessions, tmp_path):
    """A tower has no stored input to map: the deployment re-embeds from the images (workers fetch them again);
    it has no code layer for the codes index."""
    c, acme = api["client"], api["acme"]
    with sessions.begin() as s:
        tower = ready_tower(s, "acme", tower_artefact(tmp_path / "tower"))
    codes = c.post(f"/v1/models/{tower}/deploy", headers=acme, json={"index_kind": "codes"})
    assert codes.status_code == 422 and "tower without a code layer" in codes.text
    started = c.post(f"/v1/models/{tower}/deploy", headers=acme)
    assert started.status_code == 202, started.text
    body = started.json()
    state = (body["from_images"], body["status"], body["items_total"], body["items_failed"])
    assert state == (True, "embedding", 60, 0)
    listed = c.get("/v1/deployments", headers=acme).json()["deployments"]
    assert [(d["model_key"], d["from_images"]) for d in listed] == [(tower, True)]
    assert c.get("/v1/deployments", headers=api["globex"]).json()["deployments"] == []
