"""`catalog_status`: per-tenant counts, pending images and top failure reasons (real Postgres)."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy.exc import OperationalError

from core.contracts import CatalogEvent
from db.catalog import ImageResult, ItemRow, delete_product, upsert_product
from db.session import create_db_engine, session_factory
from db.status import UnknownTenant, catalog_status
from db.tenants import create_tenant
from streams.embedded_broker import free_port

pytestmark = pytest.mark.integration
MODEL, DIM = "test@1", 4


def event(tenant: str, pid: str, version: int = 1, type_: str = "product.upserted") -> CatalogEvent:
    return CatalogEvent(
        event_id=f"e-{tenant}-{pid}-{version}",
        tenant_id=tenant,
        type=type_,
        product={"id": pid, "version": version, "title": pid},
    )


def ok(url: str) -> ImageResult:
    vector = np.ones(DIM, dtype=np.float32)
    items = [
        ItemRow("whole", (0, 0, 10, 10), "image", 1.0, vector),
        ItemRow("item", (1, 1, 5, 5), "shirt", 0.9, vector),
    ]
    return ImageResult(url, 0, "ok", content_hash=url, width=10, height=10, items=items)


def failed(url: str, position: int, reason: str | None) -> ImageResult:
    return ImageResult(url, position, "failed", reason=reason)


@pytest.fixture
def catalog(sessions):
    with sessions.begin() as session:
        for tid in ("globex", "acme", "empty"):
            create_tenant(session, tid.title(), tid)
        upsert_product(
            session,
            event("acme", "p1"),
            [ok("https://cdn.example.com/ok.jpg"), failed("https://cdn.example.com/a.jpg", 1, "HTTP 404")],
            model_key=MODEL,
            dim=DIM,
        )
        upsert_product(
            session,
            event("acme", "p2"),
            [
                failed("https://cdn.example.com/b.jpg", 0, "HTTP 404"),
                failed("https://cdn.example.com/c.jpg", 1, "not an image: text/html"),
                failed("https://cdn.example.com/d.jpg", 2, "HTTP 500"),
                failed("https://cdn.example.com/e.jpg", 3, None),
            ],
            model_key=MODEL,
            dim=DIM,
        )
        delete_product(session, event("acme", "p3", 2, "product.deleted"))
        upsert_product(session, event("globex", "g1"), [ok("https://cdn.example.com/g.jpg")], model_key=MODEL, dim=DIM)
    return sessions


def test_every_tenant_sorted_with_its_counts_and_top_three_failure_reasons(catalog):
    with catalog() as session:
        rows = catalog_status(session)

    assert [r["tenant_id"] for r in rows] == ["acme", "empty", "globex"]
    acme, empty, globex = rows
    assert acme == {
        "tenant_id": "acme",
        "products": 2,
        "deleted": 1,
        "images_ok": 1,
        "images_pending": 0,
        "images_failed": 5,
        "items": 2,
        # most frequent first, ties by reason; a missing reason reads "(none)" (here cut by the top 3)
        "failure_reasons": [
            {"reason": "HTTP 404", "count": 2},
            {"reason": "HTTP 500", "count": 1},
            {"reason": "not an image: text/html", "count": 1},
        ],
        "active_model": None,  # the deployed embedder serves the `visual` arm
        "deployments": [],
    }
    assert empty == {
        "tenant_id": "empty",
        "products": 0,
        "deleted": 0,
        "images_ok": 0,
        "images_pending": 0,
        "images_failed": 0,
        "items": 0,
        "failure_reasons": [],
        "active_model": None,
        "deployments": [],
    }
    assert globex["products"] == 1 and globex["items"] == 2 and globex["failure_reasons"] == []


def test_one_tenant_or_an_unknown_tenant(catalog):
    with catalog() as session:
        assert [r["tenant_id"] for r in catalog_status(session, "globex")] == ["globex"]
        with pytest.raises(UnknownTenant, match="unknown tenant 'nobody'") as caught:
            catalog_status(session, "nobody")
    assert caught.value.tenant_id == "nobody"


def test_a_missing_reason_reads_none(sessions):
    with sessions.begin() as session:
        create_tenant(session, "Acme", "acme")
        upsert_product(
            session, event("acme", "p1"), [failed("https://cdn.example.com/a.jpg", 0, None)], model_key=MODEL, dim=DIM
        )
    with sessions() as session:
        [acme] = catalog_status(session, "acme")
    assert acme["failure_reasons"] == [{"reason": "(none)", "count": 1}]


def test_an_unreachable_postgres_surfaces_as_operational_error():
    engine = create_db_engine(f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/nothing")
    try:
        with session_factory(engine)() as session, pytest.raises(OperationalError):
            catalog_status(session)
    finally:
        engine.dispose()
