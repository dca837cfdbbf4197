"""The trained-model registry on the real Postgres: job life cycle, one job at a time, tenant scoping,
reaping crashed trainers, and the stored vectors a trainer reads."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import delete, text, update
from sqlalchemy.exc import IntegrityError

from core.contracts import CatalogEvent
from db import catalog
from db import trained_models as repo
from db.catalog import ImageResult, ItemRow
from db.models import Base, Item, Product, Tenant
from db.tenants import create_tenant

pytestmark = pytest.mark.integration

MODEL, DIM = "backbone@1", 4
CARD = {"name": "supervised-head", "method": "supervised", "metrics": {"map@5": 0.81}}


@pytest.fixture
def s(sessions):
    with sessions.begin() as session:
        create_tenant(session, "Acme", "acme")
        create_tenant(session, "Globex", "globex")
    with sessions() as session:
        yield session


def start(s, tenant="acme", method="supervised", **params):
    return repo.start_job(s, tenant, method=method, finetune=False, params=params, log_path=f"/logs/{tenant}.log")


def finish(s, job, key="supervised-head@3f2a9c1b7d10"):
    return repo.finish_job(s, job.tenant_id, job.job_id, model_key=key, artefact_path=f"/m/{key}.vtm", card=CARD)


def put(s, tenant, pid, category, vectors_per_image, *, deleted=False):
    """A product with one image per entry of `vectors_per_image`, each with a whole item and a detected item."""
    event = CatalogEvent.model_validate(
        {
            "event_id": f"{tenant}-{pid}",
            "tenant_id": tenant,
            "type": "product.upserted",
            "product": {
                "id": pid,
                "version": 1,
                "title": pid.title(),
                "category": category,
                "image_urls": [f"https://x.test/{pid}/{i}.jpg" for i in range(len(vectors_per_image))],
            },
        }
    )
    images = [
        ImageResult(
            f"https://x.test/{pid}/{i}.jpg",
            i,
            "ok",
            content_hash=f"{pid}{i}",
            items=[
                ItemRow("whole", (0, 0, 8, 8), "product", 1.0, np.asarray(v, np.float32)),
                ItemRow("item", (1, 1, 4, 4), "shoe", 0.9, -np.asarray(v, np.float32)),
            ],
        )
        for i, v in enumerate(vectors_per_image)
    ]
    catalog.upsert_product(s, event, images, model_key=MODEL, dim=DIM)
    if deleted:  # the flag alone (a delete also drops the items): the query must check it by itself
        s.execute(update(Product).where(Product.tenant_id == tenant, Product.external_id == pid).values(deleted=True))


def test_the_migration_creates_what_the_model_declares(db_engine):
    with db_engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    ours = [d for d in diffs if "trained_models" in repr(d)]
    assert ours == []


def test_a_job_goes_from_training_to_ready_once(s):
    job = start(s, holdout=0.2, seed=0)
    assert job.status == "training" and len(job.job_id) == 32 and job.params == {"holdout": 0.2, "seed": 0}
    repo.set_pid(s, "acme", job.job_id, 4242, host="trainer-1")
    ready = finish(s, job)
    s.commit()
    assert (ready.status, ready.model_key, ready.artefact_path) == (
        "ready",
        "supervised-head@3f2a9c1b7d10",
        "/m/supervised-head@3f2a9c1b7d10.vtm",
    )
    assert ready.card == CARD and ready.finished_at is not None and (ready.pid, ready.host) == (4242, "trainer-1")
    with pytest.raises(repo.TrainingJobError, match="is ready, not training"):
        repo.fail_job(s, "acme", job.job_id, "too late")
    with pytest.raises(repo.TrainingJobError, match="is ready, not training"):
        finish(s, job)


def test_a_failed_job_keeps_its_reason_and_registers_nothing(s):
    job = start(s)
    failed = repo.fail_job(s, "acme", job.job_id, "a single category: nothing to tell apart")
    s.commit()
    assert (failed.status, failed.reason, failed.model_key, failed.artefact_path) == (
        "failed",
        "a single category: nothing to tell apart",
        None,
        None,
    )
    with pytest.raises(repo.TrainingJobError, match="is failed, not training"):
        finish(s, job)
    assert repo.get_model(s, "acme", "supervised-head@3f2a9c1b7d10") is None


def test_jobs_of_another_tenant_cannot_be_changed_or_seen(s):
    job = start(s)
    s.commit()
    with pytest.raises(repo.TrainingJobError, match="no training job"):
        repo.fail_job(s, "globex", job.job_id, "hostile")
    with pytest.raises(repo.TrainingJobError, match="no training job"):
        repo.set_pid(s, "globex", job.job_id, 1)
    assert repo.get_model(s, "globex", job.job_id) is None
    assert repo.list_models(s, "globex") == []
    finish(s, job)
    assert repo.get_model(s, "globex", "supervised-head@3f2a9c1b7d10") is None


def test_one_job_per_tenant_trains_at_a_time(s):
    first = start(s)
    with pytest.raises(repo.JobAlreadyRunning) as exc:
        start(s, method="triplet")
    assert exc.value.job_id == first.job_id
    start(s, "globex")  # another tenant is not held up
    repo.fail_job(s, "acme", first.job_id, "stopped")
    assert start(s).status == "training"  # once it is over, the next one may start


def test_two_concurrent_starts_cannot_both_get_in(sessions, s):
    """Neither sees the other's uncommitted row; the partial unique index turns the loser away."""
    first = start(s)  # holds its row, uncommitted
    outcome = {}

    def second():
        with sessions() as other:
            try:
                start(other)
                other.commit()
                outcome["started"] = True
            except repo.JobAlreadyRunning as exc:
                outcome["refused"] = exc.job_id

    thread = threading.Thread(target=second)
    thread.start()
    thread.join(1.0)
    assert thread.is_alive(), "the second start should wait on the first one's row"
    s.commit()
    thread.join(30)
    assert outcome == {"refused": first.job_id}


def test_list_is_newest_first_and_scoped_to_the_tenant(s):
    old = start(s)
    finish(s, old)
    s.execute(text("UPDATE trained_models SET created_at = now() - interval '1 hour'"))
    new = start(s, method="design")
    other = start(s, "globex")
    s.commit()
    assert [j.job_id for j in repo.list_models(s, "acme")] == [new.job_id, old.job_id]
    assert {j.job_id for j in repo.list_models(s)} == {old.job_id, new.job_id, other.job_id}


def test_a_key_finds_its_newest_ready_model_and_a_job_id_finds_any_state(s):
    first = start(s)
    finish(s, first)
    s.execute(text("UPDATE trained_models SET finished_at = now() - interval '1 hour'"))
    again = start(s)  # the same data and seed again: an identical artefact, the same key
    finish(s, again)
    running = start(s)
    s.commit()
    assert repo.get_model(s, "acme", "supervised-head@3f2a9c1b7d10").job_id == again.job_id
    assert repo.get_model(s, "acme", running.job_id).status == "training"
    assert repo.get_model(s, "acme", "nope@000000000000") is None
    assert repo.get_model(s, None, first.job_id).job_id == first.job_id  # the operator CLI sees every tenant


def test_reaping_marks_failed_only_this_hosts_dead_trainers(s):
    dead, alive = start(s), start(s, "globex")
    repo.set_pid(s, "acme", dead.job_id, 111, host="here")
    repo.set_pid(s, "globex", alive.job_id, 222, host="here")
    s.commit()
    assert repo.reap_dead_jobs(s, "acme", lambda pid: pid != 111, host="elsewhere") == 0  # not this host's pid
    assert repo.reap_dead_jobs(s, "acme", lambda pid: pid != 111, host="here") == 1
    s.commit()
    job = repo.get_model(s, "acme", dead.job_id)
    assert job.status == "failed" and job.model_key is None
    assert job.reason == "the training process exited without a result (log: /logs/acme.log)"
    # Another tenant's job is checked only when that tenant (or the operator, tenant None) lists.
    assert repo.get_model(s, "globex", alive.job_id).status == "training"
    assert repo.reap_dead_jobs(s, None, lambda pid: False, host="here") == 1
    assert repo.get_model(s, "globex", alive.job_id).status == "failed"


def test_a_job_without_a_pid_yet_is_not_reaped(s):
    job = start(s)
    assert repo.reap_dead_jobs(s, "acme", lambda pid: False) == 0
    assert repo.get_model(s, "acme", job.job_id).status == "training"


def test_the_status_is_checked_and_jobs_go_with_their_tenant(s):
    start(s)
    s.commit()
    with pytest.raises(IntegrityError, match="ck_trained_models_status"):
        s.execute(text("UPDATE trained_models SET status = 'paused'"))
    s.rollback()
    s.execute(delete(Tenant).where(Tenant.id == "acme"))
    assert repo.list_models(s) == []


def test_training_rows_are_the_tenants_live_products_stored_vectors(s):
    e = np.eye(DIM, dtype=np.float32)
    put(s, "acme", "b-boot", "shoes", [e[0], e[1]])
    put(s, "acme", "a-shirt", "tops", [e[2]])
    put(s, "acme", "c-gone", "tops", [e[3]], deleted=True)
    put(s, "acme", "d-none", None, [e[3]])
    put(s, "globex", "a-other", "tops", [e[3]])
    # Vectors of another model on the same image are not this model's rows.
    image_id = s.scalar(text("SELECT id FROM product_images WHERE url = 'https://x.test/a-shirt/0.jpg'"))
    product_id = s.scalar(text("SELECT product_id FROM product_images WHERE id = :i"), {"i": image_id})
    s.add(
        Item(
            tenant_id="acme",
            product_id=product_id,
            image_id=image_id,
            kind="whole",
            box=[0, 0, 8, 8],
            label="product",
            score=1.0,
            model="other@2",
            dim=2,
            embedding=[1.0, 0.0],
        )
    )
    s.commit()

    rows = repo.catalog_training_rows(s, "acme", MODEL)
    assert [(r.product, r.category, r.title, r.image_url) for r in rows] == [
        ("a-shirt", "tops", "A-Shirt", "https://x.test/a-shirt/0.jpg"),
        ("b-boot", "shoes", "B-Boot", "https://x.test/b-boot/0.jpg"),
        ("b-boot", "shoes", "B-Boot", "https://x.test/b-boot/1.jpg"),
        ("d-none", None, "D-None", "https://x.test/d-none/0.jpg"),
    ]
    assert all(r.vector.dtype == np.float32 and r.vector.shape == (DIM,) for r in rows)
    np.testing.assert_array_equal(np.stack([r.vector for r in rows]), e[[2, 0, 1, 3]])
    assert rows[1].image_id != rows[2].image_id
    both = repo.catalog_training_rows(s, "acme", MODEL, kinds=("whole", "item"))
    assert len(both) == 8 and [r.product for r in both].count("b-boot") == 4
    assert [r.product for r in repo.catalog_training_rows(s, "acme", "other@2")] == ["a-shirt"]
    assert repo.catalog_training_rows(s, "acme", "unknown@0") == []

    summary = repo.training_data_summary(s, "acme", MODEL)
    assert summary == repo.TrainingDataSummary(products=3, categories={"tops": 1, "shoes": 1, None: 1})
