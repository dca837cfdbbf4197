"""`vitrine model train` and `vitrine eval retrieval --model`: on a folder, on a tenant's stored vectors in the real
Postgres (registered ready or failed with the reason), and from the admin API in a process of its own."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from core.contracts import CatalogEvent
from db import catalog
from db import trained_models as repo
from db.catalog import ImageResult, ItemRow
from db.tenants import create_tenant
from tests.helpers import settings_env, wait_for
from tests.training.helpers import write_product_folder
from training.data import image_folder
from vision.embedder import create_embedder
from vision.image import content_hash
from vitrine.cli import app
from vitrine.image_server import ImageServer

runner = CliRunner()


def invoke(*args):
    """(exit code, stdout; or stdout + stderr when the command failed, for its message)."""
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout if result.exit_code == 0 else result.output


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("VITRINE_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


def test_train_on_a_folder_then_evaluate_the_model_on_another_folder_it_never_saw(env):
    train_dir = write_product_folder(env / "train", categories=3, products=5, photos=2, seed=1)
    other = write_product_folder(env / "other", categories=3, products=3, photos=2, seed=2)
    code, out = invoke(
        "model", "train", "--dataset", str(train_dir), "--method", "supervised", "--epochs", "2", "--json"
    )
    assert code == 0, out
    card = json.loads(out)
    path = env / "data" / "models" / "trained" / f"{card['key']}.vtm"
    assert card["path"] == str(path) and path.is_file()
    assert set(card["metrics"]["models"]) == {"trained", "pretrained", "raw pixels"}
    code, table = invoke("model", "train", "--dataset", str(train_dir), "--method", "supervised", "--epochs", "1")
    assert code == 0 and "held-out relevance: same product" in table and "raw pixels" in table
    code, out = invoke("eval", "retrieval", "--dataset", str(other), "--model", card["key"], "--sample", "50", "--json")
    assert code == 0, out
    results = json.loads(out)["results"]
    assert card["key"] in results and any(k.startswith("efficientnet-lite0@") for k in results)
    assert any(k.startswith("raw-pixels") for k in results)
    assert json.loads(out)["images"] == 18


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--method", "supervised"], 2, "give --tenant"),
        (["--dataset", "x", "--method", "supervised", "--bits", "32"], 2, "--bits is for the triplet method"),
        (["--dataset", "x", "--method", "magic"], 2, "unknown method"),
        (["--dataset", "/nonexistent", "--method", "supervised"], 1, "is not a directory"),
    ],
)
def test_bad_requests_are_refused_with_the_reason(env, args, code, message):
    got, out = invoke("model", "train", *args)
    assert got == code and message in out, out


def test_eval_with_an_unknown_model_names_what_to_give(env):
    folder = write_product_folder(env / "set", categories=2, products=2, photos=2)
    code, out = invoke("eval", "retrieval", "--dataset", str(folder), "--model", "supervised-head@000000000000")
    assert code == 1 and "no model artefact 'supervised-head@000000000000'" in out


# --- a tenant's catalog in the real Postgres -------------------------------------------------------------------


def _store(
    s, tenant: str, product: str, category: str, vector: np.ndarray, model_key: str, photo: Photo | None = None
) -> None:
    """A product with one image whose whole-image item carries the backbone's real vector (of `photo`, served)."""
    url = photo.url if photo else f"https://x.test/{product}.jpg"
    event = CatalogEvent.model_validate(
        {
            "event_id": f"{tenant}-{product}",
            "tenant_id": tenant,
            "type": "product.upserted",
            "product": {"id": product, "version": 1, "title": product, "category": category, "image_urls": [url]},
        }
    )
    items = [ItemRow("whole", photo.box if photo else (0, 0, 1, 1), "product", 1.0, vector)]
    image = ImageResult(url, 0, "ok", content_hash=photo.digest if photo else product, items=items)
    catalog.upsert_product(s, event, [image], model_key=model_key, dim=len(vector))


@dataclass(frozen=True)
class Photo:
    url: str
    digest: str  # the content hash the worker stored when it indexed the image
    box: tuple[float, float, float, float]


def _serve(image, folder, name: str, server) -> Photo:
    """`image` as a PNG on the test's image server."""
    path = folder / f"{name}.png"
    image.save(path)
    return Photo(server.url(path.name), content_hash(path.read_bytes()), (0, 0, *image.size))


def _train_tenant(tenant: str, epochs: int, *extra: str):
    """`vitrine model train --tenant` with the supervised method, a third of the catalog held out."""
    return invoke(
        "model", "train", "--tenant", tenant, "--method", "supervised", "--epochs", str(epochs), "--holdout", "0.34",
        *extra,
    )  # fmt: skip


@pytest.fixture
def tenant_catalog(settings, sessions, tmp_path, monkeypatch):
    """acme: 18 products of 3 categories, each stored with the real backbone's vector of its photo, which a
    local server serves (as a retailer's CDN would); gone: the same, with every image gone from the server;
    tiny: 3 products."""
    for k, v in settings_env(settings).items():
        monkeypatch.setenv(k, v)
    data = image_folder(write_product_folder(tmp_path / "photos", categories=3, products=6, photos=1))
    backbone = create_embedder("efficientnet-lite0", cache_dir=settings.data_dir / "models")
    vectors = backbone.embed(data.images)
    served = tmp_path / "served"
    served.mkdir()
    with ImageServer(served) as server:
        with sessions.begin() as s:
            create_tenant(s, "Acme", "acme")
            create_tenant(s, "Gone", "gone")
            create_tenant(s, "Tiny", "tiny")
            for i, (product, category, vector) in enumerate(zip(data.products, data.labels, vectors)):
                photo = _serve(data.images[i], served, f"acme-{i}", server)
                _store(s, "acme", str(product), str(category), vector, backbone.model_key, photo)
                gone = Photo(server.url(f"gone-{i}.png"), photo.digest, photo.box)  # never written: a 404
                _store(s, "gone", str(product), str(category), vector, backbone.model_key, gone)
            for product, category, vector in list(zip(data.products, data.labels, vectors))[:3]:
                _store(s, "tiny", str(product), str(category), vector, backbone.model_key)
        yield backbone


@pytest.mark.integration
def test_train_on_a_tenant_catalog_registers_the_model_ready_with_its_card(tenant_catalog, sessions):
    code, out = _train_tenant("acme", 2, "--json")
    assert code == 0, out
    card = json.loads(out)
    assert card["data"]["source"] == "tenant acme" and card["data"]["split"].startswith("by image")
    # The held-out photos were fetched again from their URLs, so raw pixels are scored on the same 6 images.
    assert set(card["metrics"]["models"]) == {"trained", "pretrained", "raw pixels"}
    assert card["data"]["held_out_images"] == {"fetched": 6, "of": 6, "failed": {}}
    assert card["metrics"]["queries"] == 6 and card["embed_images_per_s"]["pretrained"] > 0
    with sessions.begin() as s:
        (job,) = repo.list_models(s, "acme")
        assert (job.status, job.model_key, job.method) == ("ready", card["key"], "supervised")
        assert job.card["metrics"] == card["metrics"] and job.pid is not None


@pytest.mark.integration
def test_a_catalog_whose_images_are_gone_trains_and_says_why_pixels_were_not_scored(tenant_catalog, sessions):
    code, out = _train_tenant("gone", 1, "--json")
    assert code == 0, out
    card = json.loads(out)
    assert card["data"]["held_out_images"] == {
        "fetched": 0,
        "of": 6,
        "failed": {"fetch_failed": 6},
        "raw_pixels": "not scored: 0 of 6 held-out images could be fetched",
    }
    assert set(card["metrics"]["models"]) == {"trained", "pretrained"} and card["metrics"]["queries"] == 6
    with sessions.begin() as s:
        (job,) = repo.list_models(s, "gone")
        assert job.status == "ready" and job.card["data"]["held_out_images"]["fetched"] == 0
    code, out = _train_tenant("gone", 1)
    assert code == 0 and (
        "held-out images: 0 of 6 fetched (fetch_failed 6); raw pixels not scored: 0 of 6 held-out images could be "
        "fetched" in out
    )


def test_the_held_out_images_line_says_what_every_model_was_scored_on():
    from vitrine.cli.model_train import held_out_images_line

    assert held_out_images_line({"fetched": 6, "of": 6, "failed": {}}) == "6 of 6 fetched"
    partial = {"fetched": 10, "of": 12, "failed": {"image_changed": 1, "fetch_failed": 1}}
    assert held_out_images_line(partial) == (
        "10 of 12 fetched (fetch_failed 1, image_changed 1); every model scored on those"
    )


@pytest.mark.integration
def test_a_catalog_too_small_fails_its_job_with_the_reason_and_registers_no_model(tenant_catalog, sessions):
    code, out = invoke("model", "train", "--tenant", "tiny", "--method", "supervised")
    assert code == 1 and "too small to split: 3 products, need at least 10" in out
    with sessions.begin() as s:
        (job,) = repo.list_models(s, "tiny")
        assert job.status == "failed" and "too small to split" in job.reason
        assert job.model_key is None and job.artefact_path is None


@pytest.mark.integration
def test_the_admin_api_trains_in_a_process_of_its_own_until_the_model_is_ready(tenant_catalog, settings, sessions):
    from recommender.app import create_app

    with sessions.begin() as s:
        admin_key = create_tenant(s, "Shop", "shop").admin_key
        for i in range(16):
            _store(s, "shop", f"s{i}", f"c{i % 2}", tenant_catalog.embed([_swatch(i)])[0], tenant_catalog.model_key)
    with TestClient(create_app(settings)) as client:
        headers = {"X-Vitrine-Admin-Key": admin_key}
        request = {"method": "supervised", "epochs": 2, "holdout": 0.25}
        started = client.post("/v1/models", json=request, headers=headers)
        assert started.status_code == 202, started.text
        job = started.json()["job_id"]

        def finished():
            body = client.get(f"/v1/models/{job}", headers=headers).json()
            return body if body["status"] != "training" else None

        body = wait_for(finished, timeout_s=180, interval_s=1.0, what="the training job to end")
    assert body["status"] == "ready", body.get("reason")
    assert body["model_key"].startswith("supervised-head@")
    assert body["metrics"]["models"]["trained"]["mAP@5"] >= 0


def _swatch(i: int):
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(im).ellipse((8, 8, 56, 56) if i % 2 else (8, 20, 56, 44), fill=(40 * (i % 6), 90, 200 - 15 * i))
    return im


@pytest.mark.integration
def test_reembed_maps_the_stored_vectors_through_the_head_and_indexes_them(tenant_catalog, sessions):
    from sqlalchemy import select, text

    from db.models import Item
    from db.vector_index import index_name
    from vision.trained import TrainedEmbedder

    code, out = _train_tenant("acme", 1, "--json")
    assert code == 0, out
    card = json.loads(out)
    for written in (18, 18):  # a second run finds the model deployed: nothing is written again
        code, out = invoke("model", "reembed", card["key"], "--tenant", "acme", "--settle-s", "0", "--json")
        assert code == 0, out
        report = json.loads(out)
        assert report["status"] == "ready" and report["source_key"] == tenant_catalog.model_key
        assert report["items_written"] == written and report["items_now"] == 18
    trained = TrainedEmbedder(artefact=card["path"], cache_dir=tenant_catalog.cache_dir)
    with sessions() as s:
        source = s.execute(
            select(Item.image_id, Item.embedding)
            .where(Item.tenant_id == "acme", Item.model == tenant_catalog.model_key)
            .order_by(Item.image_id)
        ).all()
        target = s.execute(
            select(Item.image_id, Item.embedding, Item.dim).where(Item.model == card["key"]).order_by(Item.image_id)
        ).all()
        assert [r.image_id for r in source] == [r.image_id for r in target] and {r.dim for r in target} == {128}
        expected = trained.embed_features(np.stack([np.asarray(r.embedding) for r in source]))
        np.testing.assert_allclose(np.stack([np.asarray(r.embedding) for r in target]), expected, atol=1e-6)
        assert s.scalar(text("SELECT count(*) FROM pg_indexes WHERE indexname = :n"), {"n": index_name(card["key"])})
    code, out = invoke("model", "reembed", "nosuch@000000000000", "--tenant", "acme")
    assert code == 1 and "no training job or model 'nosuch@000000000000'" in out
