"""Interaction events on the real Postgres: each column as sent, once per event id, popularity from new rows only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from core.contracts import InteractionEvent
from db.interactions import record_interactions
from db.tenants import create_tenant

pytestmark = pytest.mark.integration
HALF_LIFE_S = 3 * 86400


@pytest.fixture
def shop(sessions):
    with sessions.begin() as s:
        create_tenant(s, "Acme", "acme")
    return sessions


def stored(sessions) -> dict[str, tuple]:
    with sessions() as s:
        rows = s.execute(
            text(
                "SELECT event_id, type, user_id, request_id, product_id, experiment, arm, value, payload, occurred_at"
                " FROM interaction_events ORDER BY event_id"
            )
        ).all()
    return {r[0]: tuple(r[1:]) for r in rows}


def test_every_column_is_stored_as_sent_and_a_redelivery_or_a_repeat_in_the_batch_is_not_new(shop):
    at = datetime(2026, 12, 1, 12, 30, 15, 250000, tzinfo=UTC)
    exposure = InteractionEvent(
        event_id="exposure:r1",
        tenant_id="acme",
        type="exposure",
        user_id="shopper-ü",
        request_id="r1",
        product_id="p1",
        experiment="exp-1",
        arm="visual@m",
        occurred_at=at,
        payload={"shown": ["p2", "p3"], "positions": [1, 2], "fallback": None, "note": 'quote " and \\ and é'},
    )
    purchase = InteractionEvent(
        event_id="purchase:1",
        tenant_id="acme",
        type="purchase",
        user_id="shopper-2",
        product_id="p2",
        value=12.5,
        occurred_at=at + timedelta(seconds=1),
    )
    with shop.begin() as s:  # nulls in some rows and values in others; the exposure twice in one batch
        assert record_interactions(s, [exposure, purchase, exposure], half_life_s=HALF_LIFE_S) == 2
    with shop.begin() as s:  # redelivered
        assert record_interactions(s, [purchase], half_life_s=HALF_LIFE_S) == 0
    assert stored(shop) == {
        "exposure:r1": ("exposure", "shopper-ü", "r1", "p1", "exp-1", "visual@m", None, exposure.payload, at),
        "purchase:1": ("purchase", "shopper-2", None, "p2", None, None, 12.5, {}, at + timedelta(seconds=1)),
    }
    with shop() as s:  # only the purchase moved popularity, once (weight 5)
        scores = s.execute(text("SELECT product_id, score FROM product_popularity")).all()
    assert [(p, round(score, 6)) for p, score in scores] == [("p2", 5.0)]
