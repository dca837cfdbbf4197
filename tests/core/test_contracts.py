"""The event contracts refuse what no producer may put on the wire, whoever the producer is (API, CLI, replay)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import jsonschema_rs
import pytest
from pydantic import TypeAdapter, ValidationError

from core.contracts import PRINTABLE, InteractionEvent, Product, printable

CLICK = {"event_id": "e1", "tenant_id": "acme", "type": "click", "user_id": "u1", "product_id": "p1"}


def _refused(model, data: dict) -> list[tuple]:
    with pytest.raises(ValidationError) as err:
        model.model_validate(data)
    return [e["loc"] for e in err.value.errors()]


@pytest.mark.parametrize(
    "field, value",
    [
        ("event_id", "e\x00"),
        ("user_id", "   "),
        ("user_id", "u\u202e1"),
        ("product_id", "p\n"),
        ("request_id", "\u200b"),
        ("tenant_id", "\t"),
        ("value", float("nan")),
        ("value", float("inf")),
        ("value", float("-inf")),
        ("occurred_at", "0001-01-01T00:00:00Z"),
        ("occurred_at", "1969-12-31T23:59:59Z"),
        ("occurred_at", "9999-06-01T00:00:00Z"),
    ],
)
def test_an_interaction_event_refuses_what_cannot_be_stored_or_computed_with(field, value):
    assert _refused(InteractionEvent, {**CLICK, field: value}) == [(field,)]


def test_an_interaction_event_keeps_what_is_fine():
    e = InteractionEvent.model_validate(
        {**CLICK, "user_id": " Zoë 🛍 ", "value": 12.5, "occurred_at": "2024-05-01T12:00:00"}
    )
    assert e.user_id == "Zoë 🛍"  # surrounding whitespace stripped, as ids always were
    assert e.occurred_at == datetime(2024, 5, 1, 12, tzinfo=UTC)  # a time without offset is UTC


@pytest.mark.parametrize(
    "product, loc",
    [
        ({"title": "a\x00b"}, ("title",)),
        ({"category": "\x00"}, ("category",)),
        ({"id": "p\x00"}, ("id",)),
        ({"attributes": {"k\x00": "v"}}, ("attributes", "k\x00", "[key]")),
    ],
)
def test_a_product_refuses_nul_bytes_postgres_cannot_store(product, loc):
    assert loc in _refused(Product, {"id": "p1", "version": 1, **product})


def test_a_product_attribute_is_never_nan():
    locs = _refused(Product, {"id": "p1", "version": 1, "attributes": {"weight": float("nan")}})
    assert {loc[:2] for loc in locs} == {("attributes", "weight")}


def test_printable_reads_alike_in_python_rust_and_ecma_regex():
    # The API publishes PRINTABLE in its OpenAPI schema (clients and Schemathesis read it as ECMA regex)
    # and pydantic applies it with Rust's regex crate: the three must agree, or the schema would promise
    # what the API refuses. Every BMP code point alone and after a letter (surrogates excluded: not text).
    rust = TypeAdapter(printable(2))
    ecma = jsonschema_rs.validator_for({"type": "string", "pattern": PRINTABLE})
    python = re.compile(PRINTABLE.removesuffix("$") + r"\Z")  # Python's $ would also match before a final \n
    disagree = []
    for cp in (c for c in range(0x10000) if not 0xD800 <= c <= 0xDFFF):
        for s in (chr(cp), "a" + chr(cp)):
            try:
                rust.validate_python(s)
                by_rust = True
            except ValidationError:
                by_rust = False
            if not by_rust == bool(python.match(s)) == ecma.is_valid(s):
                disagree.append(hex(cp))
    assert disagree == []
    assert not ecma.is_valid(" \u3000") and not ecma.is_valid("a\x00") and ecma.is_valid("a b")
