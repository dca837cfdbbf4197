"""The storefront's lookup caches on the real broker and Postgres: tenant isolation in every key,
invalidation by this process at once, changes made elsewhere within the TTL."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from db.experiments import create_experiment, start_experiment
from db.models import ProductPopularity
from db.tenants import create_tenant, hash_key
from db.vector_index import ensure_vector_index
from recommender.app import create_app
from recommender.ttl_cache import TTLCache
from tests.recommender.helpers import Clock, put_product, rec

pytestmark = pytest.mark.integration

TTL = 30.0  # the tests move a fake clock past it instead of waiting


@pytest.fixture
def clock() -> Clock:
    return Clock()


def on_clock(cache: TTLCache, clock: Clock) -> TTLCache:
    """The same cache (name, the TTL create_app took from the settings, size bound) on the test's clock."""
    assert cache.ttl_s == TTL, cache.name
    return TTLCache(cache.name, cache.ttl_s, max_entries=cache.max_entries, clock=clock)


@pytest.fixture
def twins(settings, sessions, clock):
    """Two tenants whose catalogs use the same product ids and category names, caches on."""
    with sessions.begin() as s:
        a = create_tenant(s, "Acme", "acme", default_arm="visual")
        b = create_tenant(s, "Globex", "globex", default_arm="visual")
        ensure_vector_index(s.connection(), "m@1", 4)
        for tenant, own in (("acme", "a"), ("globex", "g")):
            put_product(s, tenant, "red", [1, 0, 0, 0])
            put_product(s, tenant, f"{own}-near", [0.95, 0.05, 0, 0])
            put_product(s, tenant, f"{own}-far", [0, 1, 0, 0])
            put_product(s, tenant, f"{own}-shoe", [0.9, 0, 0.1, 0], category="shoes")
    app = create_app(settings.model_copy(update={"lookup_cache_ttl_s": TTL, "popularity_cache_ttl_s": TTL}))
    app.state.tenant_cache = on_clock(app.state.tenant_cache, clock)
    app.state.experiment_cache = on_clock(app.state.experiment_cache, clock)
    app.state.arms["baseline"].lists = on_clock(app.state.arms["baseline"].lists, clock)
    app.state.arms["visual"].strategies = on_clock(app.state.arms["visual"].strategies, clock)
    app.state.arms["visual"].model_key = "m@1"
    app.state.arms["visual"].dim = 4
    with TestClient(app) as client:
        yield client, app, a, b


def ids(resp) -> list[str]:
    assert resp.status_code == 200, resp.text
    return [i["product_id"] for i in resp.json()["items"]]


def set_arm(sessions, clock: Clock, arm: str) -> None:
    with sessions.begin() as s:
        s.execute(text("UPDATE tenants SET default_arm = :a"), {"a": arm})
    clock.now += TTL  # the cached tenants expire


@pytest.mark.parametrize("same_category", [False, True])
def test_every_cache_keeps_tenants_apart(twins, sessions, clock, same_category):
    client, app, a, b = twins
    for arm in ("visual", "baseline"):
        if arm == "baseline":
            set_arm(sessions, clock, "baseline")
        for _ in range(2):  # the second round is served from the caches
            got_a = ids(rec(client, a.storefront_key, "red", same_category=same_category))
            got_b = ids(rec(client, b.storefront_key, "red", same_category=same_category))
            assert got_a and all(p.startswith("a-") for p in got_a), (arm, got_a)
            assert got_b and all(p.startswith("g-") for p in got_b), (arm, got_b)
    baseline, visual = app.state.arms["baseline"], app.state.arms["visual"]
    # Every cache holds one entry per tenant, never one shared by both.
    assert {k[1] for k in app.state.tenant_cache._entries} == {hash_key(a.storefront_key), hash_key(b.storefront_key)}
    assert {k[0] for k in app.state.experiment_cache._entries} == {"acme", "globex"}
    assert {k[0] for k in visual.strategies._entries} == {"acme", "globex"}
    assert {k[0] for k in baseline.lists._entries} == {"acme", "globex"}


def test_a_cached_storefront_key_never_opens_the_admin_api(twins):
    client, _, a, _ = twins
    assert rec(client, a.storefront_key, "red").status_code == 200
    assert client.get("/v1/experiments", headers={"X-Vitrine-Admin-Key": a.storefront_key}).status_code == 401
    assert client.get("/v1/experiments", headers={"X-Vitrine-Admin-Key": a.admin_key}).status_code == 200


def test_a_new_key_works_at_once_and_a_revoked_one_stops_within_the_ttl(twins, sessions, clock):
    client, _, a, _ = twins
    assert rec(client, a.storefront_key, "red").json()["arm"] == "visual"
    assert rec(client, "vsk_acme_new", "red").status_code == 401  # unknown keys are not cached...
    with sessions.begin() as s:
        s.execute(
            text("UPDATE tenants SET storefront_key_hash = :h, default_arm = 'baseline' WHERE id = 'acme'"),
            {"h": hash_key("vsk_acme_new")},
        )
    body = rec(client, "vsk_acme_new", "red").json()  # ...so the new key works at once, with the new arm
    assert body["arm"] == "baseline"
    clock.now += TTL
    assert rec(client, a.storefront_key, "red").status_code == 401


def test_experiments_started_here_serve_at_once_and_started_elsewhere_within_the_ttl(twins, sessions, clock):
    client, _, a, b = twins
    admin = {"X-Vitrine-Admin-Key": a.admin_key}
    arms = [{"name": "baseline", "weight": 0.5}, {"name": "visual", "weight": 0.5}]
    assert rec(client, a.storefront_key, "red").json()["experiment"] is None  # "no experiment" is cached
    assert client.post("/v1/experiments", json={"key": "vis-1", "arms": arms}, headers=admin).status_code == 201
    assert client.post("/v1/experiments/vis-1/start", headers=admin).status_code == 200
    assert rec(client, a.storefront_key, "red").json()["experiment"] == "vis-1"  # invalidated by the API call
    assert rec(client, b.storefront_key, "red").json()["experiment"] is None  # acme's experiment only
    # Started by another process (the CLI, another API replica): seen once the cached entry expires.
    with sessions.begin() as s:
        create_experiment(s, "globex", "g-1", arms=arms)
        start_experiment(s, "globex", "g-1")
    clock.now += TTL
    assert rec(client, b.storefront_key, "red").json()["experiment"] == "g-1"
    assert client.post("/v1/experiments/vis-1/stop", headers=admin).status_code == 200
    assert rec(client, a.storefront_key, "red").json()["experiment"] is None


def test_baseline_list_is_refreshed_after_its_ttl_and_never_shows_the_viewed_product(twins, sessions, clock):
    client, _, a, _ = twins
    set_arm(sessions, clock, "baseline")
    now = datetime.now(UTC)
    with sessions.begin() as s:
        s.add(ProductPopularity(tenant_id="acme", product_id="a-far", score=10.0, updated_at=now))
        s.add(ProductPopularity(tenant_id="acme", product_id="red", score=50.0, updated_at=now))
    assert ids(rec(client, a.storefront_key, "red")) == ["a-far", "a-near"]  # "red" is the most popular: not shown
    assert ids(rec(client, a.storefront_key, "a-near", limit=1)) == ["red"]  # the same cached list, limit applied
    with sessions.begin() as s:
        s.add(ProductPopularity(tenant_id="acme", product_id="a-near", score=100.0, updated_at=now))
    clock.now += TTL
    assert ids(rec(client, a.storefront_key, "red")) == ["a-near", "a-far"]


def test_at_most_serve_concurrency_requests_query_postgres_at_once(settings, sessions):
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from recommender.arms import ArmResult

    with sessions.begin() as s:
        a = create_tenant(s, "Acme", "acme", default_arm="visual")
        put_product(s, "acme", "red", None)
    running, seen, lock = [0], [], threading.Lock()

    class SlowArm:  # the real arms answer in milliseconds; this one holds its slot long enough to count
        name = "visual"

        def recommend(self, session, request):
            with lock:
                running[0] += 1
                seen.append(running[0])
            time.sleep(0.2)
            with lock:
                running[0] -= 1
            return ArmResult("visual", [])

    app = create_app(settings.model_copy(update={"serve_concurrency": 2}))
    app.state.arms["visual"] = SlowArm()
    with TestClient(app) as client, ThreadPoolExecutor(6) as pool:
        codes = list(pool.map(lambda i: rec(client, a.storefront_key, "red", user=f"u{i}").status_code, range(6)))
    assert codes == [200] * 6 and max(seen) == 2


def test_start_up_objects_are_frozen_while_the_app_runs_and_released_at_shutdown(settings):
    import gc

    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").status_code == 200
        assert gc.get_freeze_count() > 10_000  # the app, its libraries and their modules
    assert gc.get_freeze_count() == 0
