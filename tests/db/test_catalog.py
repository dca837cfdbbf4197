"""Catalog writes are idempotent and version-ordered (real Postgres + pgvector)."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import func, select

from core.contracts import CatalogEvent
from db import catalog
from db.catalog import ImageResult, ItemRow
from db.models import Item, Product
from db.tenants import create_tenant
from db.vector_index import ensure_vector_index
from db.vector_queries import similar_products

pytestmark = pytest.mark.integration
MODEL, DIM = "test-model@1", 8


def ev(pid="p1", version=1, type_="product.upserted", title="Shirt", urls=("https://x.test/a.jpg",)):
    return CatalogEvent.model_validate(
        {
            "event_id": f"{pid}-{version}-{type_}",
            "tenant_id": "acme",
            "type": type_,
            "product": {"id": pid, "version": version, "title": title, "image_urls": list(urls)},
        }
    )


def img(url="https://x.test/a.jpg", h="h1", vec=None, items=True):
    vec = np.eye(DIM, dtype=np.float32)[0] if vec is None else vec
    rows = [ItemRow("whole", (0, 0, 10, 10), "product", 1.0, vec)] if items else None
    return ImageResult(url, 0, "ok", content_hash=h, width=10, height=10, items=rows)


@pytest.fixture
def s(sessions):
    with sessions.begin() as session:
        create_tenant(session, "Acme", "acme")
    with sessions() as session:
        yield session


def count(s, model=Item):
    return s.scalar(select(func.count()).select_from(model))


def test_same_event_twice_changes_nothing(s):
    assert catalog.upsert_product(s, ev(), [img()], model_key=MODEL, dim=DIM) is not None
    s.commit()
    assert catalog.upsert_product(s, ev(), [img()], model_key=MODEL, dim=DIM) is None
    s.commit()
    assert count(s) == 1 and count(s, Product) == 1


def test_older_version_after_newer_is_ignored(s):
    catalog.upsert_product(s, ev(version=5, title="new"), [img()], model_key=MODEL, dim=DIM)
    assert catalog.upsert_product(s, ev(version=4, title="old"), [img()], model_key=MODEL, dim=DIM) is None
    s.commit()
    assert s.scalar(select(Product.title)) == "new"


def test_delete_removes_items_and_blocks_a_late_older_upsert(s):
    catalog.upsert_product(s, ev(version=1), [img()], model_key=MODEL, dim=DIM)
    assert catalog.delete_product(s, ev(version=2, type_="product.deleted"))
    assert count(s) == 0
    assert catalog.upsert_product(s, ev(version=1), [img()], model_key=MODEL, dim=DIM) is None
    assert s.scalar(select(Product.deleted))
    # A delete for a product never seen leaves a tombstone that outranks older upserts.
    assert catalog.delete_product(s, ev("p9", version=3, type_="product.deleted"))
    assert catalog.upsert_product(s, ev("p9", version=2), [img()], model_key=MODEL, dim=DIM) is None


def test_unchanged_image_keeps_its_items_and_removed_image_drops_them(s):
    pid = catalog.upsert_product(s, ev(version=1), [img()], model_key=MODEL, dim=DIM)
    first_item = s.scalar(select(Item.id))
    states = catalog.stored_states(s, [("acme", "p1"), ("acme", "nope")], MODEL)
    assert list(states) == [("acme", "p1")] and states[("acme", "p1")][0] == 1
    known = states[("acme", "p1")][1]["https://x.test/a.jpg"]
    assert known.content_hash == "h1" and known.fetched_at is not None
    assert pid is not None
    catalog.upsert_product(s, ev(version=2, title="renamed"), [img(items=False)], model_key=MODEL, dim=DIM)
    assert s.scalar(select(Item.id)) == first_item  # not re-inserted
    catalog.upsert_product(
        s, ev(version=3, urls=("https://x.test/b.jpg",)), [img("https://x.test/b.jpg", "h2")], model_key=MODEL, dim=DIM
    )
    assert count(s) == 1 and s.scalar(select(Item.id)) != first_item


def test_similar_products_stays_in_tenant_and_uses_the_model_index(s):
    create_tenant(s, "Other", "other")
    ensure_vector_index(s.connection(), MODEL, DIM)
    rng = np.random.default_rng(7)
    base = rng.normal(size=DIM).astype(np.float32)
    for i in range(5):
        v = base + 0.1 * i * rng.normal(size=DIM).astype(np.float32)
        catalog.upsert_product(s, ev(f"p{i}"), [img(vec=v / np.linalg.norm(v))], model_key=MODEL, dim=DIM)
    other = CatalogEvent.model_validate({**ev("x").model_dump(mode="json"), "tenant_id": "other"})
    catalog.upsert_product(s, other, [img(vec=base / np.linalg.norm(base))], model_key=MODEL, dim=DIM)
    s.commit()
    for strategy in ("hnsw", "exact"):
        found = similar_products(
            s, tenant_id="acme", external_id="p0", model_key=MODEL, dim=DIM, limit=10, strategy=strategy
        ).neighbours
        assert [n.product_id for n in found] == ["p1", "p2", "p3", "p4"]  # ordered by growing noise; no "x"
        assert all(-1e-6 <= 1 - n.score <= 2 for n in found) and found[0].score > found[-1].score
        s.rollback()
    assert similar_products(s, tenant_id="acme", external_id="nope", model_key=MODEL, dim=DIM).neighbours is None
