"""The API's /metrics scraped as Prometheus does, from a real uvicorn: no redirect, status-labelled latency,
per-arm, per-model and fallback counters."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from db.tenants import create_tenant
from db.vector_index import ensure_vector_index
from recommender.app import create_app
from tests.recommender.helpers import put_product, serve

pytestmark = pytest.mark.integration


def scrape(base: str) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics as {(name, sorted labels): value}; the page must answer 200 itself, not redirect."""
    resp = httpx.get(f"{base}/metrics", follow_redirects=False, timeout=10)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_scrape_with_status_arm_model_and_fallback_labels(settings, sessions):
    with sessions.begin() as s:
        acme = create_tenant(s, "Acme", "acme", default_arm="visual")
        ensure_vector_index(s.connection(), "m@1", 4)
        put_product(s, "acme", "red", [1, 0, 0, 0])
        put_product(s, "acme", "red2", [0.95, 0.05, 0, 0])
        put_product(s, "acme", "new", None)  # no vectors yet: the visual arm falls back to the baseline
    app = create_app(settings)
    app.state.arms["visual"].model_key, app.state.arms["visual"].dim = "m@1", 4
    with serve(app) as port:
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/metrics/", follow_redirects=False).status_code == 200  # the old spelling too
        before = scrape(base)
        shop = httpx.Client(base_url=base, headers={"X-Vitrine-Key": acme.storefront_key})
        for product, status in (("red", 200), ("red", 200), ("new", 200), ("nope", 404)):
            assert (
                shop.get("/v1/recommendations", params={"product_id": product, "user_id": "u1"}).status_code == status
            )
        assert shop.get("/v1/recommendations", params={"product_id": "red"}).status_code == 422
        after = scrape(base)

    def delta(name: str, **labels) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    count = "vitrine_api_request_seconds_count"
    route = {"route": "/v1/recommendations", "method": "GET"}
    assert delta(count, **route, status="200") == 3
    assert delta(count, **route, status="404") == 1 and delta(count, **route, status="422") == 1
    recs = "vitrine_api_recommendations_total"
    assert delta(recs, arm="visual", served_by="visual", model="m@1") == 2
    assert delta(recs, arm="visual", served_by="baseline", model="none") == 1
    assert delta("vitrine_api_fallbacks_total", arm="visual", reason="no_vectors_yet") == 1
    assert value(after, "vitrine_kafka_circuit_open") == 0  # the broker is up
