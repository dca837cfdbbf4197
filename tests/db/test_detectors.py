"""Detectors in the registry on the real Postgres: catalog photos per category, activation, rollback, scoping."""

from __future__ import annotations

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from core.contracts import CatalogEvent
from db import catalog, trained_models
from db import detectors as repo
from db.catalog import ImageResult, ItemRow
from db.deployments import DeploymentError, deploy_trained
from db.models import Base
from db.tenants import create_tenant

pytestmark = pytest.mark.integration

MODEL, DIM = "backbone@1", 4


@pytest.fixture
def s(sessions):
    with sessions.begin() as session:
        create_tenant(session, "Acme", "acme")
        create_tenant(session, "Globex", "globex")
    with sessions() as session:
        yield session


def put(s, tenant, pid, category, *, thumbnail=b"webp", deleted=False, attributes=None):
    event = CatalogEvent.model_validate(
        {
            "event_id": f"{tenant}-{pid}-{deleted}",
            "tenant_id": tenant,
            "type": "product.deleted" if deleted else "product.upserted",
            "product": {
                "id": pid,
                "version": 2 if deleted else 1,
                "title": pid,
                "category": category,
                "image_urls": [f"https://x.test/{pid}.jpg"],
                "attributes": attributes or {},
            },
        }
    )
    if deleted:
        catalog.delete_product(s, event)
        return
    item = ItemRow("whole", (0, 0, 8, 8), "product", 1.0, np.ones(DIM, np.float32))
    image = ImageResult(f"https://x.test/{pid}.jpg", 0, "ok", content_hash=pid, items=[item], thumbnail=thumbnail)
    catalog.upsert_product(s, event, [image], model_key=MODEL, dim=DIM)


def detector(s, tenant="acme", key="detector-yolo11n@aaa", *, ready=True):
    job = trained_models.start_job(s, tenant, method="detector", finetune=False, params={})
    if ready:
        trained_models.finish_job(s, tenant, job.job_id, model_key=key, artefact_path=f"/d/{key}.pt", card={})
    return job


def test_migrations_0013_and_0014_create_what_the_models_declare(db_engine):
    with db_engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert [d for d in diffs if "detect" in repr(d)] == []  # tenants.*_detector (0013), redetect_for (0014)


def test_catalog_photos_are_the_tenants_live_thumbnails_by_category(s):
    put(s, "acme", "boot", "shoes")
    put(s, "acme", "sandal", "shoes")
    put(s, "acme", "tote", "bags")
    put(s, "acme", "old", "shoes")
    put(s, "acme", "old", "shoes", deleted=True)
    put(s, "acme", "blank", "shoes", thumbnail=None)
    put(s, "globex", "clog", "shoes")
    shoes = repo.catalog_photos(s, "acme", categories=["shoes"])
    assert [(p.product, p.category, p.thumbnail) for p in shoes] == [
        ("boot", "shoes", b"webp"),
        ("sandal", "shoes", b"webp"),
    ]
    others = repo.catalog_photos(s, "acme", exclude=["shoes"])
    assert [p.product for p in others] == ["tote"]
    assert repo.category_counts(s, "acme") == {"shoes": 2, "bags": 1}
    assert [p.product for p in repo.catalog_photos(s, "globex")] == ["clog"]


def test_a_products_variants_are_one_product_for_the_held_out_split(s):
    put(s, "acme", "boot-red", "shoes", attributes={"item_group_id": "boot"})
    put(s, "acme", "boot-blue", "shoes", attributes={"item_group_id": "boot"})
    put(s, "acme", "clog-1", "shoes", attributes={"design": "clog"})  # the demo catalog's colourways
    put(s, "acme", "mule", "shoes", attributes={"item_group_id": "", "colour": "red"})  # no group: its own id
    put(s, "globex", "boot-green", "shoes", attributes={"item_group_id": "boot"})
    shoes = repo.catalog_photos(s, "acme", categories=["shoes"])
    assert [p.product for p in shoes] == ["boot", "boot", "clog", "mule"]
    assert [p.product for p in repo.catalog_photos(s, "globex")] == ["boot"]


def test_only_a_ready_detector_of_the_tenant_activates_and_rollback_returns(s):
    training = detector(s, ready=False)
    with pytest.raises(repo.DetectorError, match="still training") as err:
        repo.activate_detector(s, "acme", training.job_id)
    assert err.value.code == "not_ready"
    trained_models.fail_job(s, "acme", training.job_id, "out of memory")
    with pytest.raises(repo.DetectorError, match="out of memory"):
        repo.activate_detector(s, "acme", training.job_id)
    detector(s, "globex", "detector-yolo11n@ggg")
    with pytest.raises(repo.DetectorError, match="no detector") as err:
        repo.activate_detector(s, "acme", "detector-yolo11n@ggg")  # another tenant's
    assert err.value.code == "unknown_detector"
    head = trained_models.start_job(s, "acme", method="supervised", finetune=False, params={})
    trained_models.finish_job(s, "acme", head.job_id, model_key="supervised@1", artefact_path="/m.vtm", card={})
    with pytest.raises(repo.DetectorError, match="not a detector"):
        repo.activate_detector(s, "acme", "supervised@1")

    assert repo.active_detector(s, "acme") is None
    detector(s, key="detector-yolo11n@one")
    repo.activate_detector(s, "acme", "detector-yolo11n@one")
    assert repo.active_detector(s, "acme") == ("detector-yolo11n@one", "/d/detector-yolo11n@one.pt")
    detector(s, key="detector-yolo11n@two")
    tenant = repo.activate_detector(s, "acme", "detector-yolo11n@two")
    assert (tenant.active_detector, tenant.previous_detector) == ("detector-yolo11n@two", "detector-yolo11n@one")
    tenant = repo.rollback_detector(s, "acme")
    assert (tenant.active_detector, tenant.previous_detector) == ("detector-yolo11n@one", "detector-yolo11n@two")
    assert repo.active_detector(s, "globex") is None
    assert [d.model_key for d in repo.list_detectors(s, "acme")] == [
        "detector-yolo11n@two",
        "detector-yolo11n@one",
        None,
    ]


def test_rollback_without_an_active_detector_is_refused(s):
    with pytest.raises(repo.DetectorError) as err:
        repo.rollback_detector(s, "acme")
    assert err.value.code == "no_active"


def test_a_detector_cannot_be_deployed_as_an_embedding_model(s):
    detector(s, key="detector-yolo11n@one")
    with pytest.raises(DeploymentError, match="is a detector") as err:
        deploy_trained(s, "acme", "detector-yolo11n@one", embedder_key=MODEL)
    assert err.value.code == "detector"
