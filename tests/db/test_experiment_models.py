"""`db.experiment_models.served_models`: exposures per arm and serving model, tenant-scoped, inside the
experiment's [started_at, stopped_at) window like the statistics loader."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert

from db.experiment_models import served_models
from db.experiments import create_experiment, get_experiment
from db.models import InteractionEvent
from db.tenants import create_tenant

pytestmark = pytest.mark.integration
ARMS = [{"name": "baseline", "weight": 0.5}, {"name": "visual", "weight": 0.5}]


def _exposure(tenant: str, n: int, arm: str, payload: dict, at: datetime, kind: str = "exposure") -> dict:
    return {"tenant_id": tenant, "event_id": f"{tenant}-{n}", "type": kind, "user_id": f"u{n}",
            "request_id": f"r{n}", "product_id": "p1", "experiment": "exp", "arm": arm, "value": None,
            "payload": payload, "occurred_at": at}  # fmt: skip


def test_served_models_by_arm_in_the_window_of_one_tenant(sessions):
    start = datetime.now(UTC) - timedelta(days=2)
    with sessions() as session, session.begin():
        for tenant in ("t1", "t2"):
            create_tenant(session, tenant.upper(), tenant)
            create_experiment(session, tenant, "exp", arms=ARMS)
            exp = get_experiment(session, tenant, "exp")
            exp.status, exp.started_at = "running", start
        inside = start + timedelta(hours=1)
        rows = (
            [_exposure("t1", i, "visual", {"model": "effnet@2"}, inside) for i in range(5)]
            + [_exposure("t1", 10 + i, "visual", {"model": None}, inside) for i in range(2)]  # fallback
            + [_exposure("t1", 20 + i, "baseline", {}, inside) for i in range(3)]  # no model key at all
            + [_exposure("t1", 30, "visual", {"model": "old"}, start - timedelta(hours=1))]  # before the start
            + [_exposure("t1", 31, "visual", {"model": "effnet@2"}, inside, kind="click")]  # not an exposure
            + [_exposure("t2", 40 + i, "visual", {"model": "other-tenant"}, inside) for i in range(4)]
        )
        session.execute(insert(InteractionEvent), rows)
    with sessions() as session:
        assert served_models(session, "t1", "exp") == {"baseline": {None: 3}, "visual": {"effnet@2": 5, None: 2}}
        assert served_models(session, "t2", "exp") == {"visual": {"other-tenant": 4}}
        assert served_models(session, "t1", "nosuch") == {}
