"""The decayed popularity on the real Postgres: no stored time, however old or far ahead, breaks it (#13)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from core.contracts import CatalogEvent, InteractionEvent
from db.catalog import upsert_product
from db.interactions import record_interactions
from db.models import ProductPopularity
from db.popularity import HORIZON_HALF_LIVES, decay_params, decay_sql
from db.product_queries import popular_in_category
from db.tenants import create_tenant

pytestmark = pytest.mark.integration
HALF_LIFE_S = 3 * 86400  # the default VITRINE_POPULARITY_HALF_LIFE_S
PRODUCTS = ("p-old", "p-future", "p-fresh", "p-none")


@pytest.fixture
def shop(sessions):
    """Tenant acme with four in-stock products of category "c", no engagement yet."""
    with sessions.begin() as s:
        create_tenant(s, "Acme", "acme")
        for pid in PRODUCTS:
            event = CatalogEvent(
                event_id=f"e-{pid}",
                tenant_id="acme",
                type="product.upserted",
                product={"id": pid, "version": 1, "title": pid, "category": "c"},
            )
            upsert_product(s, event, [], model_key="test@1", dim=4)
    return sessions


def click(event_id: str, product_id: str, at: datetime, type_: str = "click") -> InteractionEvent:
    """An interaction as a producer other than the API could send it: `model_construct` skips the time check."""
    return InteractionEvent.model_construct(
        event_id=event_id,
        tenant_id="acme",
        type=type_,
        user_id="u",
        request_id=None,
        product_id=product_id,
        experiment=None,
        arm=None,
        value=None,
        occurred_at=at,
        payload={},
    )


def ranking(sessions) -> dict[str, float]:
    """Product -> popularity now, as the baseline arm reads it."""
    with sessions() as s:
        rows = popular_in_category(s, tenant_id="acme", category="c", limit=10, half_life_s=HALF_LIFE_S)
    return {n.product_id: round(n.score, 3) for n in rows}  # score = 1 - distance = the popularity


def scores(sessions) -> dict[str, tuple[float, datetime]]:
    with sessions() as s:
        return {r.product_id: (r.score, r.updated_at) for r in s.query(ProductPopularity)}


def test_ancient_and_far_future_interactions_break_neither_the_ranking_nor_later_batches(shop):
    now = datetime.now(UTC)
    with shop.begin() as s:  # the reproduction (2000-01-01), and the extremes Python can hold
        assert (
            record_interactions(
                s,
                [
                    click("old-2000", "p-old", datetime(2000, 1, 1, tzinfo=UTC)),
                    click("old-1", "p-old", datetime(1, 1, 1, tzinfo=UTC)),
                    click("future", "p-future", datetime(9999, 12, 31, tzinfo=UTC), "add_to_cart"),
                ],
                half_life_s=HALF_LIFE_S,
            )
            == 3
        )
    # Later batches with fresh engagement on the same products are written as usual.
    with shop.begin() as s:
        assert (
            record_interactions(
                s,
                [
                    click("fresh-1", "p-old", now),
                    click("fresh-2", "p-fresh", now, "purchase"),
                    click("fresh-3", "p-future", now),
                ],
                half_life_s=HALF_LIFE_S,
            )
            == 3
        )
    # Old clicks decayed to exactly nothing; the future one counted as now (3 + 1), never as 7,999 years ahead.
    assert ranking(shop) == {"p-fresh": 5.0, "p-future": 4.0, "p-old": 1.0, "p-none": 0.0}
    stored = scores(shop)
    assert all(at <= datetime.now(UTC) for _, at in stored.values())
    assert list(ranking(shop)) == ["p-fresh", "p-future", "p-old", "p-none"]


def test_a_batch_that_holds_an_ancient_and_a_fresh_click_on_one_product_is_written(shop):
    now = datetime.now(UTC)
    with shop.begin() as s:
        assert (
            record_interactions(
                s,
                [click("a", "p-old", datetime(1970, 1, 1, tzinfo=UTC)), click("b", "p-old", now, "add_to_cart")],
                half_life_s=HALF_LIFE_S,
            )
            == 2
        )
    assert ranking(shop)["p-old"] == 3.0


def test_stored_scores_at_any_time_are_read_without_error(shop):
    """Rows written before the times were bounded (or by hand) still rank: from the year 1 to 'infinity'."""
    with shop.begin() as s:
        for pid, at in [
            ("p-old", "0001-01-01 00:00:00+00"),
            ("p-future", "infinity"),
            ("p-fresh", "294276-01-01 00:00:00+00"),
            ("p-none", "-infinity"),
        ]:
            s.execute(
                text("INSERT INTO product_popularity VALUES ('acme', :p, 2.0, CAST(:at AS timestamptz))"),
                {"p": pid, "at": at},
            )
    # A time ahead of now counts as now (the score at face value); one older than the horizon as nothing.
    assert ranking(shop) == {"p-future": 2.0, "p-fresh": 2.0, "p-old": 0.0, "p-none": 0.0}
    with shop.begin() as s:  # and new engagement folds into each of them
        record_interactions(s, [click(f"n-{pid}", pid, datetime.now(UTC)) for pid in PRODUCTS], half_life_s=HALF_LIFE_S)
    assert ranking(shop) == {"p-future": 3.0, "p-fresh": 3.0, "p-old": 1.0, "p-none": 1.0}


@pytest.mark.parametrize(
    "half_lives, expected",
    [
        (0, 1.0),
        (1, 0.5),
        (10, 2.0**-10),
        (-5, 1.0),
        (HORIZON_HALF_LIVES - 1, 2.0 ** -(HORIZON_HALF_LIVES - 1)),
        (HORIZON_HALF_LIVES, 0.0),
        (2000, 0.0),
    ],
)
def test_the_decay_factor(sessions, half_lives, expected):
    """2^-k after k half-lives, 1 for a time ahead, 0 from the horizon on (where exp would soon underflow)."""
    later = datetime(2026, 1, 1, tzinfo=UTC)
    with sessions() as s:
        got = s.scalar(
            text(f"SELECT {decay_sql(':later', ':earlier')}"),
            {
                "later": later,
                "earlier": later - timedelta(seconds=half_lives * HALF_LIFE_S),
                **decay_params(HALF_LIFE_S),
            },
        )
    assert got == pytest.approx(expected, rel=1e-12, abs=0)  # 2^-k: exp(-k ln 2), exact to float8 rounding
