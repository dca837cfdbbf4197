"""Migration 0017 moves learned codes from `<key>+codes` items onto their source items' `code`, and back."""

from __future__ import annotations

import itertools
import os

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.orm import Session

from db.migrate import alembic_config, upgrade
from db.session import create_db_engine
from db.tenants import create_tenant
from db.vector_index import ensure_vector_index, index_name

pytestmark = pytest.mark.integration

_names = itertools.count()
CODES = {"whole": [1, -1, -1, 1, 1, 1, -1, 1], "item": [-1, -1, 1, 1, -1, 1, 1, -1]}


def _vector(values) -> str:
    return "[" + ",".join(str(float(v)) for v in values) + "]"


def _seed(conn) -> None:
    """One product, two items of the head m@1 (whole image and a detected item), their code items as 0016 wrote them
    (+-1 floats under m@1+codes, copying the source's image, kind, box and label), an item of another model, and
    the codes index 0016 built over the code items."""
    with Session(bind=conn) as s:
        create_tenant(s, "acme", "acme")
        s.flush()
    pid = conn.scalar(
        text(
            "INSERT INTO products (tenant_id, external_id, version, title, in_stock, attributes, deleted) "
            "VALUES ('acme', 'p1', 1, 'P', true, '{}', false) RETURNING id"
        )
    )
    img = conn.scalar(
        text(
            "INSERT INTO product_images (tenant_id, product_id, url, position, status) "
            "VALUES ('acme', :p, 'https://x.test/1.jpg', 0, 'ok') RETURNING id"
        ),
        {"p": pid},
    )
    add = text(
        "INSERT INTO items (tenant_id, product_id, image_id, kind, box, label, score, model, dim, embedding, "
        "in_stock, category) VALUES ('acme', :p, :i, :kind, :box, :label, 1.0, :m, :d, CAST(:e AS vector), true, 'c')"
    )
    boxes = {"whole": [0.0, 0.0, 1.0, 1.0], "item": [0.1, 0.1, 0.5, 0.5]}
    for kind, box in boxes.items():
        ids = {"p": pid, "i": img, "kind": kind, "box": box, "label": kind}
        conn.execute(add, {**ids, "m": "m@1", "d": 4, "e": _vector([0.5, -0.5, 0.5, 0.5])})
        conn.execute(add, {**ids, "m": "m@1+codes", "d": 8, "e": _vector(CODES[kind])})
    conn.execute(add, {"p": pid, "i": img, "kind": "whole", "box": boxes["whole"], "label": "whole", "m": "other@1",
                       "d": 4, "e": _vector([1, 0, 0, 0])})  # fmt: skip
    conn.execute(
        text(
            f"CREATE INDEX {index_name('m@1', 'codes')} ON items USING ivfflat "
            "((binary_quantize(embedding::vector(8))::bit(8)) bit_hamming_ops) WITH (lists = 1) "
            "WHERE model = 'm@1+codes'"
        )
    )


def _bits(values) -> str:
    return "".join("1" if v > 0 else "0" for v in values)


def test_codes_move_onto_their_items_and_back(postgres):
    url = postgres.create_database(f"m17_{os.getpid()}_{next(_names)}")  # empty, not from the template
    upgrade(url, "0016")
    engine = create_db_engine(url)
    codes_index = index_name("m@1", "codes")
    try:
        with engine.begin() as conn:
            _seed(conn)
        upgrade(url)
        with engine.begin() as conn:
            rows = conn.execute(text("SELECT model, kind, code FROM items ORDER BY model, kind")).all()
            assert [tuple(r) for r in rows] == [
                ("m@1", "item", _bits(CODES["item"])),
                ("m@1", "whole", _bits(CODES["whole"])),
                ("other@1", "whole", None),
            ]
            assert conn.scalar(text("SELECT to_regclass(:n)"), {"n": codes_index}) is None  # the old index is gone
            assert ensure_vector_index(conn, "m@1", 8, kind="codes") == codes_index  # the new one builds
            definition = conn.scalar(text("SELECT indexdef FROM pg_indexes WHERE indexname = :n"), {"n": codes_index})
            assert "(code)::bit(8)" in definition and "'m@1'" in definition, definition

        command.downgrade(alembic_config(url), "0016")
        with engine.connect() as conn:
            columns = set(conn.scalars(text("SELECT column_name FROM information_schema.columns "
                                            "WHERE table_name = 'items'")))  # fmt: skip
            codes = conn.execute(
                text("SELECT kind, dim, embedding::text FROM items WHERE model = 'm@1+codes' ORDER BY kind")
            ).all()
            assert conn.scalar(text("SELECT to_regclass(:n)"), {"n": codes_index}) is None
        assert "code" not in columns
        assert [(k, d, e) for k, d, e in codes] == [
            ("item", 8, _vector(CODES["item"]).replace(".0", "")),
            ("whole", 8, _vector(CODES["whole"]).replace(".0", "")),
        ]
    finally:
        engine.dispose()
