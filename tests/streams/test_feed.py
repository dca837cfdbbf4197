"""Feed parsing, pure: JSONL and CSV lines in, events or numbered reasons out."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from streams.feed import FeedFormatError, feed_format, import_event_id, parse_csv, parse_feed, parse_jsonl


def _line(doc) -> bytes:
    return (json.dumps(doc) + "\n").encode()


PRODUCT = {
    "id": "p1",
    "version": 3,
    "title": "Red shirt",
    "category": "shirts",
    "price": "19.90",
    "currency": "EUR",
    "image_urls": ["https://cdn.example.com/p1.jpg"],
    "attributes": {"size": "M"},
}


def test_good_jsonl_products_become_deterministic_upserts():
    records = list(parse_jsonl([_line(PRODUCT), _line({**PRODUCT, "id": "p2", "version": 1})], "acme"))
    assert [r.line for r in records] == [1, 2] and all(r.ok for r in records)
    first = records[0].event
    assert first.type == "product.upserted" and first.tenant_id == "acme"
    assert first.event_id == "import:acme:p1:3" and first.key == "acme:p1"
    assert first.product.price == Decimal("19.90") and first.product.attributes == {"size": "M"}
    # Re-reading the same file yields the same event ids: the worker de-duplicates them.
    again = list(parse_jsonl([_line(PRODUCT)], "acme"))[0].event
    assert again.event_id == first.event_id


def test_whole_events_pass_through_and_take_the_import_tenant_when_missing():
    event = {"event_id": "e-9", "type": "product.deleted", "product": {"id": "p9", "version": 4}}
    [record] = parse_jsonl([_line(event)], "acme")
    assert record.ok and record.event.event_id == "e-9" and record.event.type == "product.deleted"
    assert record.event.key == "acme:p9"


def test_bad_lines_are_numbered_and_the_good_ones_still_parse():
    lines = [
        _line(PRODUCT),
        b'{"id": "p2", "version": 1,\n',  # truncated JSON
        b"\n",  # blank lines are skipped, but still counted for numbering
        _line({"id": "p3", "version": -1, "price": "cheap"}),
        _line([1, 2]),
        b'{"id": "\xff\xfe", "version": 1}\n',  # not UTF-8
        _line({**PRODUCT, "id": "p7"}),
    ]
    records = list(parse_jsonl(lines, "acme"))
    assert [(r.line, r.ok) for r in records] == [(1, True), (2, False), (4, False), (5, False), (6, False), (7, True)]
    errors = {r.line: r.error for r in records if not r.ok}
    assert errors[2].startswith("invalid JSON")
    assert "version: Input should be greater than or equal to 0" in errors[4]
    assert "price: Input should be a valid decimal" in errors[4]
    assert errors[5] == "expected a JSON object, got list"
    assert errors[6].startswith("invalid JSON")


def test_schema_errors_name_the_nested_field_of_a_whole_event():
    event = {
        "event_id": "e1",
        "tenant_id": "acme",
        "type": "product.upserted",
        "product": {**PRODUCT, "image_urls": ["not a url"], "colour": "red"},
    }
    [record] = parse_jsonl([_line(event)], "acme")
    assert not record.ok
    assert "product.image_urls.0: Input should be a valid URL" in record.error
    assert "product.colour: Extra inputs are not permitted" in record.error


def test_an_event_of_another_tenant_is_a_bad_line():
    event = {"event_id": "e1", "tenant_id": "globex", "type": "product.deleted", "product": {"id": "p", "version": 1}}
    [record] = parse_jsonl([_line(event)], "acme")
    assert not record.ok and record.error == "tenant_id: 'globex' is not the imported tenant 'acme'"


def test_csv_splits_image_urls_and_keeps_extra_columns_as_attributes():
    lines = [
        "\ufeffid,version,title,price,currency,in_stock,image_urls,colour,size\n",  # Excel writes a BOM
        "p1,2,Red shirt,19.90,EUR,no,https://cdn.example.com/a.jpg| https://cdn.example.com/b.jpg,red,\n",
        '"p2",1,"A title, with a comma",,,,,blue,XL\n',
    ]
    records = list(parse_csv([s.encode() for s in lines], "acme"))
    assert [(r.line, r.ok) for r in records] == [(2, True), (3, True)]
    p1, p2 = records[0].event.product, records[1].event.product
    assert [str(u) for u in p1.image_urls] == ["https://cdn.example.com/a.jpg", "https://cdn.example.com/b.jpg"]
    assert p1.version == 2 and p1.price == Decimal("19.90") and p1.in_stock is False
    assert p1.attributes == {"colour": "red"}  # an empty cell is "not given", not ""
    assert p2.title == "A title, with a comma" and p2.in_stock is True and p2.price is None
    assert p2.attributes == {"colour": "blue", "size": "XL"}
    assert records[0].event.event_id == import_event_id("acme", "p1", 2) == "import:acme:p1:2"


def test_csv_bad_rows_report_the_line_they_start_on():
    lines = [
        "id,version,title,price\n",
        'p1,1,"a title\n',
        'over two lines",5\n',  # one record on lines 2-3 (as a file yields them)
        "p2,x,ok,5\n",  # line 4: bad version
        "p3,1,ok,5,surplus\n",  # line 5: too many fields
        "p4,1,ok,-2\n",  # line 6: negative price
    ]
    records = list(parse_csv(lines, "acme"))
    assert [(r.line, r.ok) for r in records] == [(2, True), (4, False), (5, False), (6, False)]
    assert records[0].event.product.title == "a title\nover two lines"
    assert records[1].error.startswith("version: Input should be a valid integer")
    assert records[2].error == "5 fields but the header has 4"
    assert records[3].error == "price: Input should be greater than or equal to 0"


def test_csv_without_the_required_columns_is_refused_whole():
    with pytest.raises(FeedFormatError, match="lacks column"):
        list(parse_csv(["title,price\n", "x,1\n"], "acme"))


def test_format_comes_from_the_extension_unless_given():
    assert feed_format("feed.jsonl") == "jsonl" and feed_format("FEED.CSV") == "csv"
    assert feed_format("feed.csv.gz") == "csv" and feed_format("export.txt", "csv") == "csv"
    with pytest.raises(FeedFormatError, match="--format"):
        feed_format("export.txt")
    with pytest.raises(FeedFormatError):
        list(parse_feed([], "acme", "xml"))


def test_very_long_product_ids_still_get_a_valid_event_id():
    long_id = "x" * 255
    [record] = parse_jsonl([_line({"id": long_id, "version": 1})], "acme")
    assert record.ok and len(record.event.event_id) <= 255 and record.event.event_id.startswith("import:")
