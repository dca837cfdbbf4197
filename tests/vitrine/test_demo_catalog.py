"""The demo catalog: products, colourway pairs, photos, the feed, reuse, determinism and its source.

The builds use a generated tree of RGBA cut-outs named like openclipart's topics (one hue per
category), so they never need openclipart; one test uses the real package when it is installed.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from core.contracts import CatalogEvent, Product
from tests.vitrine.helpers import SHOP, TOPICS, write_drawings
from training.multiview import OPENCLIPART_DIR
from vision.datasets import DatasetError
from vitrine.demo_catalog import (
    SOURCE_ENV,
    SourceNotFound,
    build_demo_catalog,
    catalog_events,
    category_of,
    dominant_hue,
    find_source,
)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    root = write_drawings(tmp_path_factory.mktemp("drawings"), TOPICS)
    # Topics that are not products (excluded, or not mapped to a shop category) must never show up.
    write_drawings(root, {"signs_and_symbols": 0.5, "people": 0.2}, per_topic=4)
    return root


@pytest.fixture(scope="module")
def built(source, tmp_path_factory):
    return build_demo_catalog(
        tmp_path_factory.mktemp("demo") / "catalog", source=source, n_products=40, min_per_category=4
    )


def test_products_cover_the_categories_and_have_images(built):
    products = built.products
    assert len(products) == 40 and len({p["id"] for p in products}) == 40
    assert set(built.categories) == SHOP  # all 8 topics, each its own shop category
    assert sum(built.categories.values()) == 40 and max(built.categories.values()) <= 7  # balanced-ish
    assert {p["attributes"]["source"].rsplit("/", 1)[0] for p in products} == set(TOPICS)
    counts = Counter(len(p["image_urls"]) for p in products)
    assert set(counts) <= {1, 2, 3} and counts[1] < 40 and counts[2] + counts[3] >= 4
    for p in products:
        for name in p["image_urls"]:
            assert "/" not in name
            with Image.open(built.images_dir / name) as im:
                assert im.format == "JPEG" and max(im.size) == 384
    manifest = json.loads(built.manifest_path.read_text())
    assert manifest["n_products"] == 40 and manifest["seed"] == 0 and manifest["products"] == 40


def test_colourway_pairs_share_the_design_and_differ_in_colour(built):
    by_id = {p["id"]: p for p in built.products}
    twins = [p for p in built.products if p["attributes"]["hue_shift"]]
    assert 8 <= len(twins) <= 14  # about a third of ~30 drawings
    for twin in twins:
        original = by_id[twin["attributes"]["design"]]
        a, b = original["attributes"], twin["attributes"]
        assert a["design"] == b["design"] and a["source"] == b["source"] and a["subject"] == b["subject"]
        assert a["hue_shift"] == 0 and a["colour"].endswith("-ish") and b["colour"].endswith("-ish")
        assert 90 <= b["hue_shift"] <= 270 and original["price"] == twin["price"]
        assert b["colour"] in twin["title"] and a["subject"] in twin["title"]
        # The photos show it: the twin's coloured pixels are of the hue its colour names, the original's not.
        with Image.open(built.images_dir / twin["image_urls"][0]) as im:
            assert f"{dominant_hue(im.convert('RGBA'))}-ish" == b["colour"]
        with Image.open(built.images_dir / original["image_urls"][0]) as im:
            assert f"{dominant_hue(im.convert('RGBA'))}-ish" == a["colour"] != b["colour"]
    originals = [p for p in built.products if not p["attributes"]["hue_shift"]]
    assert len({p["attributes"]["design"] for p in originals}) == len(originals)


def test_feed_lines_are_products_and_events_validate(built):
    lines = built.feed_path.read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [p["id"] for p in built.products]
    for line in lines:
        raw = json.loads(line)
        raw["image_urls"] = [f"http://127.0.0.1:8000/{n}" for n in raw["image_urls"]]
        product = Product.model_validate(raw)
        assert product.currency == "EUR" and product.price is not None and product.price > 0
    events = catalog_events(built, "t-demo", "http://127.0.0.1:9999/")
    assert len(events) == 40 and len({e["event_id"] for e in events}) == 40
    for event, p in zip(events, built.products, strict=True):
        parsed = CatalogEvent.model_validate(event)
        assert parsed.product.id == p["id"] and parsed.tenant_id == "t-demo"
        assert [str(u) for u in parsed.product.image_urls] == [f"http://127.0.0.1:9999/{n}" for n in p["image_urls"]]
        assert parsed.product.attributes["design"] == p["attributes"]["design"]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_same_files_other_seed_other_catalog(built, source, tmp_path):
    again = build_demo_catalog(tmp_path / "again", source=source, n_products=40, min_per_category=4)
    assert not again.reused
    assert _files(again.out_dir) == _files(built.out_dir)
    other = build_demo_catalog(tmp_path / "other", source=source, n_products=40, seed=1, min_per_category=4)
    assert {p["id"] for p in other.products} != {p["id"] for p in built.products}


def test_a_build_with_the_same_arguments_is_reused_and_others_replace_it(source, tmp_path):
    out = tmp_path / "catalog"
    first = build_demo_catalog(out, source=source, n_products=12, min_per_category=4)
    stamp = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    reused = build_demo_catalog(out, source=source, n_products=12, min_per_category=4)
    assert reused.reused and reused.products == first.products and reused.categories == first.categories
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == stamp  # nothing rewritten
    smaller = build_demo_catalog(out, source=source, n_products=9, min_per_category=4)
    assert not smaller.reused and len(smaller.products) == 9
    names = {n for p in smaller.products for n in p["image_urls"]}
    assert {p.name for p in smaller.images_dir.glob("*.jpg")} == names  # the earlier build's photos are gone
    # A missing photo means the build is incomplete: it is made again, not reused.
    (smaller.images_dir / sorted(names)[0]).unlink()
    assert not build_demo_catalog(out, source=source, n_products=9, min_per_category=4).reused


def test_too_few_categories_or_drawings_is_a_clear_error(tmp_path):
    few = write_drawings(tmp_path / "few", dict(list(TOPICS.items())[:3]), per_topic=4)
    with pytest.raises(DatasetError, match="3 categories with >= 4 usable cut-outs; the demo catalog needs 8"):
        build_demo_catalog(tmp_path / "out", source=few, n_products=10, min_per_category=4)
    with pytest.raises(DatasetError, match="enough for .* products, not 100"):
        build_demo_catalog(tmp_path / "out", source=few, n_products=100, min_categories=3, min_per_category=4)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_a_folder_the_build_did_not_write_is_never_replaced(source, tmp_path):
    (tmp_path / "out" / "images").mkdir(parents=True)
    (tmp_path / "out" / "images" / "mine.jpg").write_bytes(b"someone's photo")
    with pytest.raises(DatasetError, match="was not written by a demo catalog build"):
        build_demo_catalog(tmp_path / "out", source=source, n_products=5, min_per_category=4)
    assert (tmp_path / "out" / "images" / "mine.jpg").read_bytes() == b"someone's photo"


def test_a_folder_of_other_categories_uses_its_folder_names(tmp_path):
    shop = write_drawings(tmp_path / "shop", {"mugs": 0.0, "garden_tools": 0.3, "lamps": 0.6}, per_topic=3)
    catalog = build_demo_catalog(tmp_path / "out", source=shop, n_products=8, min_categories=3, min_per_category=3)
    assert set(catalog.categories) == {"mugs", "garden tools", "lamps"}
    assert category_of("food/beverages/alcohol") == "drinks" and category_of("food/fruit") == "fruit & vegetables"
    assert category_of("people/smilies") is None


def test_find_source_order_and_the_missing_source_error(source, tmp_path, monkeypatch):
    nowhere = tmp_path / "no-system-openclipart"
    assert find_source(tmp_path, system_dir=source, environ={}) == source
    assert find_source(tmp_path, system_dir=nowhere, environ={SOURCE_ENV: str(source)}) == source
    # An explicit VITRINE_SAMPLE_IMAGES wins over the system's openclipart.
    other = tmp_path / "other-drawings"
    write_drawings(other, {"food/fruit": 0.0}, per_topic=1)
    assert find_source(tmp_path, system_dir=source, environ={SOURCE_ENV: str(other)}) == other
    # No apt-get on the PATH: nothing is downloaded, the error says what to install and how.
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))
    data_dir = tmp_path / "data"
    with pytest.raises(SourceNotFound) as error:
        find_source(data_dir, system_dir=nowhere, environ={SOURCE_ENV: str(tmp_path / "nothing")})
    message = str(error.value)
    assert str(nowhere) in message and f"{SOURCE_ENV}={tmp_path / 'nothing'} is not a folder" in message
    assert "apt-get/dpkg not found" in message and "sudo apt-get install openclipart-png" in message
    assert "dpkg -x" in message and not (data_dir / "openclipart").exists()
    # A copy unpacked earlier into data_dir/openclipart is used without apt-get.
    unpacked = data_dir / "openclipart" / "usr/share/openclipart/png"
    write_drawings(unpacked, {"food/fruit": 0.0}, per_topic=1)
    assert find_source(data_dir, system_dir=nowhere, environ={}) == unpacked


@pytest.mark.skipif(not OPENCLIPART_DIR.is_dir(), reason="openclipart-png is not installed")
def test_the_real_openclipart_gives_a_shop_sized_catalog(tmp_path):
    catalog = build_demo_catalog(tmp_path / "catalog", source=OPENCLIPART_DIR)
    assert len(catalog.products) == 520 and len(catalog.categories) >= 8
    assert min(catalog.categories.values()) >= 20
    assert sum(len(p["image_urls"]) > 1 for p in catalog.products) >= 150
    assert sum(p["attributes"]["hue_shift"] > 0 for p in catalog.products) >= 100
