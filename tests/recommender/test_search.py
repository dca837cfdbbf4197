"""Search by image ("shop the look") and by text, on real Postgres with the real EfficientNet-Lite0."""

from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient

from core.contracts import CatalogEvent
from db.tenants import create_tenant
from recommender.app import create_app
from streams.image_fetch import ImageFetcher
from streams.ingest import Indexer
from vision.components import build_detector, build_embedder

pytestmark = pytest.mark.integration


@pytest.fixture
def indexed(settings, sessions, image_server, sample_images):
    """acme has the bus and gift photos indexed; globex has the same bus photo."""
    with sessions.begin() as s:
        a = create_tenant(s, "Acme", "acme")
        create_tenant(s, "Globex", "globex")
    embedder = build_embedder(settings)

    async def index():
        fetcher = ImageFetcher(allow_hosts=frozenset({"127.0.0.1"}))
        ix = Indexer(sessions=sessions, embedder=embedder, detector=build_detector(settings), fetcher=fetcher)
        events = [
            CatalogEvent.model_validate(
                {
                    "event_id": f"{t}-{p}",
                    "tenant_id": t,
                    "type": "product.upserted",
                    "product": {"id": p, "version": 1, "title": p, "image_urls": [f"{image_server.base_url}/{p}.jpg"]},
                }
            )
            for t, p in (("acme", "bus-wide"), ("acme", "gift-blue"), ("acme", "portrait"), ("globex", "bus-front"))
        ]
        results = await ix.handle_batch(events)
        await fetcher.aclose()
        assert [r.status for r in results] == ["indexed"] * 4

    asyncio.run(index())
    with TestClient(create_app(settings)) as client:
        yield client, a, sample_images[0]


def test_a_shoppers_photo_finds_the_matching_product_of_its_own_tenant_only(indexed):
    client, a, root = indexed
    photo = (root / "bus-front.jpg").read_bytes()  # a different crop of the same bus
    resp = client.post(
        "/v1/search/by-image",
        headers={"X-Vitrine-Key": a.storefront_key},
        files={"image": ("look.jpg", photo, "image/jpeg")},
        params={"limit": 3},
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["items"][0]["label"] and len(body["items"][0]["box"]) == 4
    found = [p["product_id"] for p in body["items"][0]["products"]]
    assert found[0] == "bus-wide" and "bus-front" not in found  # globex's bus is invisible to acme


def test_bad_uploads_and_private_urls_get_clear_errors(indexed, image_server):
    client, a, _ = indexed
    h = {"X-Vitrine-Key": a.storefront_key}
    text_file = client.post("/v1/search/by-image", headers=h, files={"image": ("x.jpg", b"hello", "image/jpeg")})
    assert text_file.status_code == 422 and "not an image" in text_file.text
    private = client.post(
        "/v1/search/by-image", headers=h, data={"url": f"http://localhost:{image_server.port}/bus-front.jpg"}
    )
    assert private.status_code == 422 and "refused" in private.text
    neither = client.post("/v1/search/by-image", headers=h)
    assert neither.status_code == 422 and "exactly one" in neither.text
    assert client.get("/v1/search", params={"q": "red dress"}, headers=h).status_code == 501


def _register_detector(sessions, tenant: str, key: str, artefact: str) -> None:
    from db import detectors, trained_models

    with sessions.begin() as s:
        job = trained_models.start_job(s, tenant, method="detector", finetune=False, params={})
        trained_models.finish_job(s, tenant, job.job_id, model_key=key, artefact_path=artefact, card={})
        detectors.activate_detector(s, tenant, key)


def test_search_uses_the_tenants_active_student_detector_and_falls_back_when_it_cannot_load(indexed, sessions):
    client, a, root = indexed
    state = client.app.state
    # A real ultralytics YOLO (the architecture, untrained): what a student artefact loads into.
    _register_detector(sessions, "acme", "detector-yolo11n@test", "yolo11n.yaml")
    _register_detector(sessions, "globex", "detector-yolo11n@gone", "/nonexistent/student.pt")
    acme = state.detectors.for_tenant(state.sessions, "acme")
    assert acme is not state.detector and acme.name == "yolo" and acme.weights == "yolo11n.yaml"
    assert acme.label_map == {} and acme.classes is None and not acme.trim_whole  # its own classes only
    # globex's artefact is missing: the configured detector serves, and the search still answers.
    assert state.detectors.for_tenant(state.sessions, "globex") is state.detector
    calls = []
    real_detect = acme.detect
    acme.detect = lambda images: calls.append(len(images)) or real_detect(images)  # a spy: the real YOLO runs
    photo = (root / "bus-front.jpg").read_bytes()
    resp = client.post(
        "/v1/search/by-image",
        headers={"X-Vitrine-Key": a.storefront_key},
        files={"image": ("look.jpg", photo, "image/jpeg")},
    )
    assert resp.status_code == 200, resp.text
    assert calls == [1]  # the tenant's student found the items of the shopper's photo
    assert resp.json()["items"][0]["label"] == "image"  # the whole-image item always comes first
