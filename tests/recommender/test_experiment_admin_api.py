"""The admin API's experiment creation validates metric roles (issue #17, defect 4), on the real Postgres."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from db.tenants import create_tenant
from recommender.app import create_app

pytestmark = pytest.mark.integration

ARMS = [{"name": "baseline", "weight": 0.5}, {"name": "visual", "weight": 0.5}]


def test_unknown_guardrail_is_a_precise_422_and_known_ones_store_their_margin(settings, sessions):
    with sessions.begin() as s:
        creds = create_tenant(s, "Acme", "acme")
    admin = {"X-Vitrine-Admin-Key": creds.admin_key}
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        bad = client.post("/v1/experiments", headers=admin, json={"key": "e1", "arms": ARMS, "guardrails": ["nosuch"]})
        assert bad.status_code == 422 and "nosuch" in bad.text and "conversion" in bad.text, bad.text
        margin = {"key": "e1", "arms": ARMS, "guardrails": [{"metric": "conversion", "margin": 1.5}]}
        assert client.post("/v1/experiments", headers=admin, json=margin).status_code == 422
        twice = {"key": "e1", "arms": ARMS, "guardrails": ["conversion", "conversion"]}
        dup = client.post("/v1/experiments", headers=admin, json=twice)
        assert dup.status_code == 422 and "listed twice" in dup.text
        assert client.get("/v1/experiments", headers=admin).json() == []  # nothing stored by the rejects
        body = {"key": "e1", "arms": ARMS, "guardrails": ["conversion", {"metric": "revenue_per_user", "margin": 0.01}]}
        ok = client.post("/v1/experiments", headers=admin, json=body)
        assert ok.status_code == 201, ok.text
        assert ok.json()["guardrails"] == [
            {"metric": "conversion", "margin": 0.02},
            {"metric": "revenue_per_user", "margin": 0.01},
        ]


def test_a_fixed_salt_reproduces_the_assignment_and_the_default_is_random(settings, sessions):
    from sqlalchemy import select

    from db.models import Experiment

    with sessions.begin() as s:
        creds = create_tenant(s, "Acme", "acme")
    admin = {"X-Vitrine-Admin-Key": creds.admin_key}
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        bad = client.post("/v1/experiments", headers=admin, json={"key": "e0", "arms": ARMS, "salt": "no spaces!"})
        assert bad.status_code == 422 and "salt" in bad.text
        for key, salt in (("e1", "sim-seed-0"), ("e2", None), ("e3", None)):
            body = {"key": key, "arms": ARMS} | ({"salt": salt} if salt else {})
            assert client.post("/v1/experiments", headers=admin, json=body).status_code == 201
        # one salt for two experiments would correlate their arms user by user: refused
        again = client.post("/v1/experiments", headers=admin, json={"key": "e4", "arms": ARMS, "salt": "sim-seed-0"})
        assert again.status_code == 409 and "e1" in again.json()["detail"], again.text
    with sessions() as s:
        salts = dict(s.execute(select(Experiment.key, Experiment.salt).where(Experiment.tenant_id == "acme")).all())
    assert salts["e1"] == "sim-seed-0" and "e0" not in salts and "e4" not in salts
    assert len(salts["e2"]) == 16 and salts["e2"] != salts["e3"]  # random per experiment unless fixed
