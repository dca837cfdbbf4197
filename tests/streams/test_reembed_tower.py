"""A fine-tuned tower deployed on the real Postgres: its pages fetch each item's image again from a real HTTP
server, crop the stored box and run the tower (a small real ONNX graph); live ingest writes its vectors
beside the backbone's; a crash mid re-embed resumes without writing a vector twice; an image that changed
or vanished since it was indexed leaves its items without a vector, counted, and the model still serves."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from sqlalchemy import select, text

from core.contracts import CatalogEvent
from db import deployments as repo
from db.models import Item, ModelDeployment, Product
from db.tenants import create_tenant
from db.vector_index import index_ready
from streams.image_fetch import ImageFetcher
from streams.ingest import Indexer
from streams.reembed import DeployedHeads, ModelCache, Reembedder
from streams.tower_images import ImageCrops
from tests.streams.deployment_helpers import TOWER_DIM, ready_tower, tower_artefact
from vision.components import build_detector, build_embedder
from vision.image import pil_open
from vision.items import crop_box
from vision.trained import TrainedEmbedder
from vitrine.sample_catalog import SAMPLES

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def backbone(models_dir):
    from core.settings import Settings

    e = build_embedder(Settings(data_dir=models_dir.parent))
    e.load()
    return e


@pytest.fixture(scope="module")
def tower(tmp_path_factory):
    return tower_artefact(tmp_path_factory.mktemp("tower"))


def test_migration_0015_creates_what_the_model_declares(db_engine):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from db.models import Base

    with db_engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert [d for d in diffs if "model_deployments" in repr(d)] == []  # needs_images, items_failed


def event(sample, base_url: str, tenant: str = "acme") -> CatalogEvent:
    return CatalogEvent.model_validate(
        {
            "event_id": f"{tenant}-{sample.id}",
            "tenant_id": tenant,
            "type": "product.upserted",
            "product": {"id": sample.id, "version": 1, "title": sample.title, "category": sample.category,
                        "image_urls": [f"{base_url}/{sample.image}"]},
        }
    )  # fmt: skip


def ingest(settings, sessions, backbone, events, heads=None) -> None:
    async def main():
        fetcher = ImageFetcher(timeout_s=3.0, allow_hosts=frozenset({"127.0.0.1"}), deadline_s=5.0)
        indexer = Indexer(sessions=sessions, embedder=backbone, detector=build_detector(settings), fetcher=fetcher,
                          heads=heads)  # fmt: skip
        try:
            for e in events:
                assert (await indexer.handle(e)).status == "indexed"
        finally:
            await fetcher.aclose()

    asyncio.run(main())


def register(sessions, tenant: str, path) -> str:
    with sessions.begin() as s:
        return ready_tower(s, tenant, path)


def runner(db_engine, sessions, tmp_path, settings, **kw) -> Reembedder:
    kw = {"pause_s": 0, "settle_s": 0, "lease_s": 30, "image_page": 3, "image_duty": 1.0} | kw
    return Reembedder(
        db_engine, sessions, ModelCache(tmp_path / "cache"), images=ImageCrops.from_settings(settings), **kw
    )


def vectors(sessions, model: str) -> dict[tuple[str, tuple], np.ndarray]:
    """(product, box) -> the stored vector of `model`, for tenant acme."""
    with sessions() as s:
        rows = s.execute(
            select(Product.external_id, Item.box, Item.embedding)
            .join(Product, Product.id == Item.product_id)
            .where(Item.tenant_id == "acme", Item.model == model)
        ).all()
    return {(pid, tuple(box)): np.asarray(emb, np.float32) for pid, box, emb in rows}


def expected(sample_root, tower_path, tmp_path, keys) -> dict:
    """What the tower gives for the crop of each (product, box), computed here from the files."""
    tower = TrainedEmbedder(artefact=tower_path, cache_dir=tmp_path / "expected")
    files = {s.id: s.image for s in SAMPLES}
    out = {}
    for pid, box in keys:
        image = pil_open(sample_root / files[pid]).convert("RGB")
        out[(pid, box)] = tower.embed([crop_box(image, box)])[0]
    return out


@pytest.fixture
def catalog(settings, sessions, backbone, image_server):
    with sessions.begin() as s:
        create_tenant(s, "Acme", "acme")
        create_tenant(s, "Globex", "globex")
    ingest(settings, sessions, backbone, [event(s, image_server.base_url) for s in SAMPLES[:6]])
    ingest(settings, sessions, backbone, [event(SAMPLES[6], image_server.base_url, "globex")])
    return SAMPLES[:6]


def test_a_tower_is_re_embedded_from_the_images_and_new_products_get_its_vectors(
    settings, sessions, db_engine, backbone, image_server, sample_images, tower, tmp_path, catalog
):
    key = register(sessions, "acme", tower)
    with sessions.begin() as s:
        dep, started = repo.deploy_trained(s, "acme", key, embedder_key=backbone.model_key)
        assert started and dep.needs_images and dep.source_key == backbone.model_key and dep.dim == TOWER_DIM
        total = dep.items_total
        with pytest.raises(repo.DeploymentError, match="tower without a code layer"):
            repo.deploy_trained(s, "acme", key, embedder_key=backbone.model_key, index_kind="codes")
    assert total >= len(catalog)  # the whole image of each, plus what the detector found

    # A runner that cannot fetch images leaves a tower alone (the head-only benchmark's runner).
    head_only = Reembedder(db_engine, sessions, ModelCache(tmp_path / "c0"), pause_s=0, settle_s=0)
    assert head_only.run_once() is None

    runner(db_engine, sessions, tmp_path, settings).run_until_idle()

    with sessions() as s:
        dep = s.get(ModelDeployment, ("acme", key))
        assert (dep.status, dep.items_done, dep.items_written, dep.items_failed) == ("ready", total, total, 0)
        assert repo.servable_models(s, "acme")[key].dim == TOWER_DIM
    got = vectors(sessions, key)
    assert set(got) == set(vectors(sessions, backbone.model_key))  # every item, none of globex's
    want = expected(sample_images[0], tower, tmp_path, got)
    for k, v in got.items():
        np.testing.assert_allclose(v, want[k], atol=1e-5)  # the crop of the stored box, re-fetched
    with db_engine.connect() as conn:
        assert index_ready(conn, key, "halfvec")

    # Live ingest: a new product gets the tower's vectors in the same transaction as the backbone's.
    heads = DeployedHeads(sessions, ModelCache(tmp_path / "c1"), backbone.model_key, ttl_s=0)
    assert [m.key for m in heads.get()["acme"]] == [key]
    ingest(settings, sessions, backbone, [event(SAMPLES[7], image_server.base_url)], heads=heads.get)
    got = vectors(sessions, key)
    new = {k for k in got if k[0] == SAMPLES[7].id}
    assert new and {k for k in vectors(sessions, backbone.model_key) if k[0] == SAMPLES[7].id} == new
    want = expected(sample_images[0], tower, tmp_path, new)
    for k in new:
        np.testing.assert_allclose(got[k], want[k], atol=1e-5)


def test_a_crashed_tower_re_embed_resumes_and_changed_images_are_counted_not_guessed(
    settings, sessions, db_engine, backbone, tower, tmp_path, catalog
):
    key = register(sessions, "acme", tower)
    changed = catalog[1].id
    with sessions.begin() as s:
        # The image's bytes changed since it was indexed: its stored boxes belong to the old picture.
        s.execute(
            text("UPDATE product_images SET content_hash = 'stale' WHERE product_id = "
                 "(SELECT id FROM products WHERE tenant_id = 'acme' AND external_id = :p)"),
            {"p": changed},
        )  # fmt: skip
        dep, _ = repo.deploy_trained(s, "acme", key, embedder_key=backbone.model_key)
        total = dep.items_total
    stale = {k for k in vectors(sessions, backbone.model_key) if k[0] == changed}

    class Crash(RuntimeError):
        pass

    first = runner(db_engine, sessions, tmp_path, settings, lease_s=1, owner="a")
    real, calls = first.images.crops, []

    def crashing(items):
        calls.append(len(items))
        if len(calls) == 2:
            raise Crash("killed after the first page")
        return real(items)

    first.images.crops = crashing
    with pytest.raises(Crash):
        first.run_once()
    with sessions() as s:
        dep = s.get(ModelDeployment, ("acme", key))
        done_before = dep.items_done
    assert dep.status == "embedding" and done_before == 3  # the first page was committed, the second not
    time.sleep(1.1)  # the lease of the dead runner runs out
    runner(db_engine, sessions, tmp_path, settings, owner="b").run_until_idle()

    with sessions() as s:
        dep = s.get(ModelDeployment, ("acme", key))
        dupes = s.scalar(
            text("SELECT count(*) FROM (SELECT 1 FROM items WHERE model = :k GROUP BY image_id, kind, box "
                 "HAVING count(*) > 1) d"),
            {"k": key},
        )  # fmt: skip
    assert dupes == 0
    # The sweep tried the changed image's items again; they stay without a vector, counted, and the model serves.
    assert (dep.status, dep.items_written, dep.items_failed) == ("ready", total - len(stale), len(stale))
    assert {k[0] for k in vectors(sessions, key)} == {s.id for s in catalog} - {changed}
