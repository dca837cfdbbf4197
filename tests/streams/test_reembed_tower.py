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
from db import retirement
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
from vitrine.cli.status import deployment_line
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


@pytest.fixture
def runner(db_engine, sessions, tmp_path, settings):
    """runner(**settings) -> a Reembedder that fetches images; their fetchers are closed after the test."""
    made: list[Reembedder] = []

    def make(**kw) -> Reembedder:
        kw = {"pause_s": 0, "settle_s": 0, "lease_s": 30, "image_page": 3, "image_duty": 1.0} | kw
        images = ImageCrops.from_settings(settings)
        made.append(Reembedder(db_engine, sessions, ModelCache(tmp_path / "cache"), images=images, **kw))
        return made[-1]

    yield make
    for r in made:
        r.images.close()


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
    settings, sessions, db_engine, backbone, image_server, sample_images, tower, tmp_path, catalog, runner
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

    runner().run_until_idle()

    with sessions() as s:
        dep = s.get(ModelDeployment, ("acme", key))
        assert (dep.status, dep.items_done, dep.items_written, dep.items_failed) == ("ready", total, total, 0)
        assert repo.servable_models(s, "acme")[key].dim == TOWER_DIM
    got = vectors(sessions, key)
    assert set(got) == set(vectors(sessions, backbone.model_key))  # every item of acme's
    with sessions() as s:
        others = s.scalar(text("SELECT count(*) FROM items WHERE model = :k AND tenant_id <> 'acme'"), {"k": key})
    assert others == 0  # none for globex, whose products share the image server
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

    # Retired, its vectors go; deleting needs no images, so a runner that cannot fetch any does it.
    with sessions.begin() as s:
        retirement.retire(s, "acme", key)
    head_only = Reembedder(db_engine, sessions, ModelCache(tmp_path / "c0"), pause_s=0, settle_s=0)
    assert head_only.run_once().status == "retired" and vectors(sessions, key) == {}


def test_a_crashed_tower_re_embed_resumes_and_changed_or_vanished_images_are_counted_not_guessed(
    settings, sessions, db_engine, backbone, image_server, tower, tmp_path, catalog, runner
):
    key = register(sessions, "acme", tower)
    changed, vanished, shared = catalog[1].id, catalog[5].id, catalog[4].id
    image_of = "(SELECT id FROM products WHERE tenant_id = 'acme' AND external_id = :p)"
    with sessions.begin() as s:
        # The image's bytes changed since it was indexed: its stored boxes belong to the old picture.
        s.execute(text(f"UPDATE product_images SET content_hash = 'stale' WHERE product_id = {image_of}"),
                  {"p": changed})  # fmt: skip
        # The image is gone from the retailer's server.
        s.execute(text(f"UPDATE product_images SET url = :u WHERE product_id = {image_of}"),
                  {"p": vanished, "u": f"{image_server.base_url}/gone.jpg"})  # fmt: skip
        # Another product's URL now, whose bytes are not what this product indexed (the hash is per item).
        s.execute(text(f"UPDATE product_images SET url = :u WHERE product_id = {image_of}"),
                  {"p": shared, "u": f"{image_server.base_url}/{catalog[3].image}"})  # fmt: skip
        dep, _ = repo.deploy_trained(s, "acme", key, embedder_key=backbone.model_key)
        total = dep.items_total
    stale = {k for k in vectors(sessions, backbone.model_key) if k[0] in (changed, vanished, shared)}

    class Crash(RuntimeError):
        pass

    first = runner(lease_s=1, owner="a")
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
    runner(owner="b", image_page=100).run_until_idle()  # the rest in one page: catalog[3] and [4] share a URL

    with sessions() as s:
        dep = s.get(ModelDeployment, ("acme", key))
        dupes = s.scalar(
            text("SELECT count(*) FROM (SELECT 1 FROM items WHERE model = :k GROUP BY image_id, kind, box "
                 "HAVING count(*) > 1) d"),
            {"k": key},
        )  # fmt: skip
    assert dupes == 0
    # The sweep tried those items again; they stay without a vector, counted, and the model serves.
    assert (dep.status, dep.items_written, dep.items_failed) == ("ready", total - len(stale), len(stale))
    assert {k[0] for k in vectors(sessions, key)} == {s.id for s in catalog} - {changed, vanished, shared}


def test_a_tower_whose_graph_fails_on_the_crops_fails_its_deployment_once(
    settings, sessions, backbone, tmp_path, catalog, runner
):
    """A graph that cannot run on its own card's input (here a fixed 64 px layer fed 32 px) fails the deployment
    with the reason, rather than fetching the retailer's images again every few seconds forever."""
    import torch

    from vision.onnx_export import export_onnx
    from vision.trained import write_artefact

    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 64 * 64, 4)).eval()
    export_onnx(module, torch.rand(2, 3, 64, 64), tmp_path / "fixed.onnx")
    card = {"name": "broken-finetune", "method": "finetune", "dim": 4,
            "input": {"size": 32, "preprocessing": "imagenet"}}  # fmt: skip
    key = register(sessions, "acme", write_artefact(tmp_path / "m", card, onnx=(tmp_path / "fixed.onnx").read_bytes()))
    with sessions.begin() as s:
        repo.deploy_trained(s, "acme", key, embedder_key=backbone.model_key)
    r = runner()
    fetched = []
    real = r.images.crops
    r.images.crops = lambda items: fetched.append(len(items)) or real(items)
    r.run_until_idle()
    with sessions() as s:
        dep = s.get(ModelDeployment, ("acme", key))
    assert dep.status == "failed" and "the tower did not run" in dep.reason
    assert len(fetched) == 1 and r.run_once() is None  # one page fetched, then nothing more to do


def failing_on_the_portrait(key: str, tower, sample_images, tmp_path, calls: list | None = None):
    """The real tower as ingest runs it, except that it raises on crops of the portrait's size (the whole image
    of SAMPLES[7]: the fault injected); `calls` gets the number of crops of each call."""
    from PIL import Image

    from db.catalog import DerivedModel

    real = TrainedEmbedder(artefact=tower, cache_dir=tmp_path / "tower")
    poison_size = Image.open(sample_images[0] / SAMPLES[7].image).size

    def embed(crops):
        if calls is not None:
            calls.append(len(crops))
        if any(c.size == poison_size for c in crops):
            raise ValueError("the graph cannot take this crop")
        return real.embed(crops)

    return DerivedModel(key, TOWER_DIM, embed=embed)


def test_a_crop_the_tower_cannot_embed_at_ingest_costs_only_its_own_vector(
    settings, sessions, backbone, image_server, sample_images, tower, tmp_path, catalog
):
    """Before: the tower ran once per tenant and chunk, and one crop it failed on left every product of that
    chunk without the tower's vectors. Now the chunk is run again crop by crop; the failing crop is counted."""
    from PIL import Image

    from streams import metrics

    calls = []
    key = "acme-tower@fault"
    heads = {"acme": [failing_on_the_portrait(key, tower, sample_images, tmp_path, calls)]}
    events = [event(SAMPLES[7], image_server.base_url)]
    for sample in (SAMPLES[0], SAMPLES[3]):  # two more products in the same chunk, on photos of the catalog's
        body = event(sample, image_server.base_url).model_dump(mode="json")
        body["event_id"], body["product"]["id"] = f"acme-new-{sample.id}", f"new-{sample.id}"
        events.append(CatalogEvent.model_validate(body))
    failures = metrics.TOWER_FAILURES.labels("ValueError")
    before = failures._value.get()

    async def main():
        fetcher = ImageFetcher(timeout_s=3.0, allow_hosts=frozenset({"127.0.0.1"}), deadline_s=5.0)
        indexer = Indexer(sessions=sessions, embedder=backbone, detector=build_detector(settings), fetcher=fetcher,
                          heads=lambda: heads)  # fmt: skip
        try:
            return await indexer.handle_batch(events)
        finally:
            await fetcher.aclose()

    results = asyncio.run(main())
    assert [r.status for r in results] == ["indexed"] * 3  # every product indexed, with its backbone vectors
    assert calls[0] > 1 and len(calls) == 1 + calls[0]  # the chunk at once, then each of its crops alone
    got, backbone_items = vectors(sessions, key), vectors(sessions, backbone.model_key)
    new = {k for k in backbone_items if k[0] in {e.product.id for e in events}}
    with Image.open(sample_images[0] / SAMPLES[7].image) as im:
        poisoned = {k for k in new if k[0] == SAMPLES[7].id and (k[1][2] - k[1][0], k[1][3] - k[1][1]) == im.size}
    assert poisoned and set(got) == new - poisoned  # every other crop of the chunk has its tower vector
    assert failures._value.get() - before == len(poisoned)
    want = expected(sample_images[0], tower, tmp_path, {k for k in got if not k[0].startswith("new-")})
    for k, v in want.items():
        np.testing.assert_allclose(got[k], v, atol=1e-5)


def status_of(session, key: str) -> dict:
    """The deployment's entry in `vitrine status` (tenant acme)."""
    from db.status import catalog_status

    [tenant] = catalog_status(session, "acme")
    return next(d for d in tenant["deployments"] if d["model_key"] == key)


def test_a_ready_tower_gets_the_vectors_ingest_could_not_write_from_a_repair_pass(
    settings, sessions, backbone, image_server, sample_images, tower, tmp_path, catalog, runner
):
    """Before: a crop the tower failed on at ingest after the model was ready stayed without its vector for good.
    Now ingest marks the deployment, and the runner's repair pass writes it from the image, serving throughout;
    a pass whose process died is resumed by the next claim."""

    key = register(sessions, "acme", tower)
    with sessions.begin() as s:
        repo.deploy_trained(s, "acme", key, embedder_key=backbone.model_key)
    runner().run_until_idle()
    with sessions() as s:
        assert s.get(ModelDeployment, ("acme", key)).status == "ready"

    heads = {"acme": [failing_on_the_portrait(key, tower, sample_images, tmp_path)]}
    ingest(settings, sessions, backbone, [event(SAMPLES[7], image_server.base_url)], heads=lambda: heads)
    portrait = {k for k in vectors(sessions, backbone.model_key) if k[0] == SAMPLES[7].id}
    missing = portrait - set(vectors(sessions, key))
    assert missing  # the crop the tower failed on
    with sessions.begin() as s:
        dep = s.get(ModelDeployment, ("acme", key))
        assert dep.status == "ready" and dep.phase == "done" and dep.repair_from is not None
        assert key in repo.servable_models(s, "acme")
        assert deployment_line(status_of(s, key)).endswith("writing the vectors ingest could not (repair)")
        crashed = repo.claim_repair(s, "a-worker-that-dies", lease_s=0)  # claimed, then its process died
        assert crashed.phase == "repair" and crashed.repair_from is None

    dep = runner().run_once()  # nothing embedding: the expired repair pass is claimed and finished
    assert (dep.model_key, dep.phase) == (key, "done")
    got = vectors(sessions, key)
    assert set(got) == set(vectors(sessions, backbone.model_key))  # every item, none written twice
    want = expected(sample_images[0], tower, tmp_path, missing)
    for k in missing:
        np.testing.assert_allclose(got[k], want[k], atol=1e-5)
    with sessions() as s:
        dep = s.get(ModelDeployment, ("acme", key))
        assert (dep.status, dep.phase, dep.repair_from, dep.lease_owner, dep.items_failed) == ("ready", "done", None,
                                                                                               None, 0)  # fmt: skip
        assert deployment_line(status_of(s, key)) == f"model {key}: ready, halfvec index"
    assert runner().run_once() is None  # nothing left to repair
