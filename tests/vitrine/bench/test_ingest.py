"""`vitrine bench ingest` end to end on the test broker and database (a few products, not a measurement)."""

from __future__ import annotations

import pytest

from vitrine.bench.ingest import build_catalog, make_images, run_ingest_bench

pytestmark = pytest.mark.integration


def test_catalog_is_seeded_and_a_resend_has_the_same_images(tmp_path):
    names = make_images(tmp_path, 12, seed=3)
    first = build_catalog(5, names, "http://img", version=1, tag="a", seed=3)
    again = build_catalog(5, names, "http://img", version=2, tag="b", seed=3)
    assert [e["product"]["image_urls"] for e in first] == [e["product"]["image_urls"] for e in again]
    assert all(1 <= len(e["product"]["image_urls"]) <= 3 for e in first)
    assert {e["product"]["version"] for e in again} == {2} and first[0]["event_id"] != again[0]["event_id"]


def test_bench_ingest_reports_every_product_indexed_and_consistent_ratios(settings):
    r = run_ingest_bench(settings, products=4, timeout_s=240, latency_posts=5)
    first, resend = r["first_ingest"], r["resend_unchanged"]
    assert r["webhook_latency"]["posts"] == 5 and 0 < r["webhook_latency"]["p50_ms"] <= r["webhook_latency"]["p99_ms"]
    assert r["settings"]["broker_storage"] == "external"  # the session's broker, configured by address
    assert first["statuses"] == {"indexed": 4} and resend["statuses"] == {"indexed": 4}
    assert 4 <= first["images"] <= 12  # 1-3 images per product
    runs = r["embedder_only_runs"]
    assert r["embedder_only"]["images_per_s"] == max(m["all_cores"]["images_per_s"] for m in runs.values())
    assert r["pipeline_to_embedder_ratio"] == round(first["images_per_s"] / r["embedder_only"]["images_per_s"], 3)
    assert r["machine"]["cores"] and r["settings"]["products"] == 4


def test_bench_ingest_refuses_a_broker_storage_it_cannot_choose(settings):
    with pytest.raises(RuntimeError, match="VITRINE_KAFKA_BOOTSTRAP"):
        run_ingest_bench(settings, products=1, broker="memory")
