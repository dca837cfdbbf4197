"""Image URLs with credentials are refused where they enter: the contract, and so every feed line and webhook."""

from __future__ import annotations

import json
import re

import pytest
from pydantic import ValidationError

from core.contracts import NO_USERINFO, Product
from streams.feed import parse_csv, parse_jsonl

WITH_CREDENTIALS = [
    "http://shop:s3cret@img.example.com/a.jpg",
    "https://shop@img.example.com/a.jpg",
    "http://:s3cret@img.example.com/a.jpg",
    "http://@img.example.com/a.jpg",
    "http://user%40x:s3cret@img.example.com/",
    "http:///shop:s3cret@img.example.com/a.jpg",
]
WITHOUT = [
    "https://img.example.com/a@2x.jpg",
    "https://img.example.com/a.jpg?by=me@example.com",
    "https://img.example.com:8443/a.jpg#v@2",
    "http://img.example.com\\@evil.example/a.jpg",
]


@pytest.mark.parametrize("url", WITH_CREDENTIALS)
def test_a_url_with_credentials_is_refused_without_repeating_them(url):
    with pytest.raises(ValidationError) as err:
        Product(id="p1", version=1, image_urls=["https://img.example.com/ok.jpg", url])
    [e] = err.value.errors(include_url=False)
    assert e["loc"] == ("image_urls", 1) and e["type"] == "url_userinfo"
    assert "s3cret" not in e["msg"] and "user:password@" in e["msg"]  # names the rule, not the secret


@pytest.mark.parametrize("url", WITHOUT)
def test_an_at_sign_after_the_host_is_fine(url):
    # The backslash one: browsers and the URL parser read it as a slash, so evil.example is not a host.
    assert Product(id="p1", version=1, image_urls=[url]).image_urls[0].username is None


def test_the_published_schema_carries_the_same_rule():
    # Schema-driven clients (and fuzzers) see the pattern the check applies.
    items = Product.model_json_schema()["properties"]["image_urls"]["items"]
    assert items["pattern"] == NO_USERINFO
    assert not any(re.match(items["pattern"], u) for u in WITH_CREDENTIALS)
    assert all(re.match(items["pattern"], u) for u in WITHOUT)


@pytest.mark.parametrize(
    "url",
    [
        *WITH_CREDENTIALS,
        *WITHOUT,
        "not a url",
        "http:img.example.com/a.jpg",
        "//img.example.com/a.jpg",
        " https://img.example.com/a.jpg",
        "ftp://u@h/a",
    ],
)
def test_a_url_the_model_accepts_matches_the_published_pattern(url):
    # A schema-driven fuzzer must not find a URL outside the schema that the API takes anyway.
    try:
        Product(id="p1", version=1, image_urls=[url])
    except ValidationError as exc:
        credentials = [e for e in exc.errors(include_url=False) if e["type"] == "url_userinfo"]
        assert not credentials or not re.match(NO_USERINFO, url)  # refused for credentials: outside the schema
    else:
        assert re.match(NO_USERINFO, url)


def test_the_feed_importer_reports_the_line():
    good = {"id": "p1", "version": 1, "image_urls": ["https://img.example.com/a.jpg"]}
    bad = {"id": "p2", "version": 1, "image_urls": ["https://img.example.com/b.jpg", WITH_CREDENTIALS[0]]}
    records = list(parse_jsonl([json.dumps(good), json.dumps(bad)], "acme"))
    assert records[0].ok and records[1].line == 2 and not records[1].ok
    assert records[1].error.startswith("image_urls.1: credentials (user:password@) are not allowed")
    assert "s3cret" not in records[1].error
    [csv_record] = parse_csv(["id,version,image_urls", f"p3,1,{WITH_CREDENTIALS[0]}"], "acme")
    assert csv_record.line == 2 and csv_record.error.startswith("image_urls.0: credentials")
