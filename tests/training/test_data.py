"""The training data interface: sources, the held-out split (never a product on both sides), and bad data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.training.helpers import write_product_folder
from training.data import TrainingError, TrainingSet, check_trainable, from_vectors, image_folder, split_holdout


def _set(products, labels) -> TrainingSet:
    return TrainingSet("t", np.array(products), np.array(labels), features=np.zeros((len(products), 4), np.float32))


def test_split_by_product_keeps_every_photo_of_a_product_on_one_side():
    products = [f"p{i}" for i in range(30) for _ in range(3)]
    labels = [f"c{i % 3}" for i in range(30) for _ in range(3)]
    ts = _set(products, labels)
    train, test, how = split_holdout(ts, 0.2, seed=1)
    assert how == "by product"
    assert not set(ts.products[train]) & set(ts.products[test])
    assert len(set(ts.products[test])) == 6  # 20 % of the 10 products of each category
    assert sorted([*train, *test]) == list(range(len(products)))
    again = split_holdout(ts, 0.2, seed=1)
    assert (again[1] == test).all()
    assert not (split_holdout(ts, 0.2, seed=2)[1] == test).all()


def test_split_by_image_for_category_only_data_is_stratified():
    ts = _set([f"img{i}" for i in range(40)], [f"c{i % 4}" for i in range(40)])
    train, test, how = split_holdout(ts, 0.25, seed=0)
    assert how.startswith("by image")
    held = ts.labels[test]
    assert {lab: int((held == lab).sum()) for lab in set(held)} == {"c0": 2, "c1": 2, "c2": 2, "c3": 2}


def test_too_small_and_single_label_data_are_refused_with_the_reason():
    with pytest.raises(TrainingError, match="too small to split: 4 products, need at least 10"):
        check_trainable(_set([f"p{i}" for i in range(4)], ["a", "b"] * 2), "acme")
    with pytest.raises(TrainingError, match="a single label .'shoes'. and one image per product"):
        check_trainable(_set([f"p{i}" for i in range(12)], ["shoes"] * 12), "acme")
    # One category is fine when products have several photos: "same product" is the signal.
    check_trainable(_set([f"p{i // 2}" for i in range(24)], ["shoes"] * 24), "acme")
    with pytest.raises(TrainingError, match="too small to split"):
        from_vectors("tenant acme", ["a", "b"], ["x", "y"], np.zeros((2, 3)))


def test_image_folder_of_products_reads_categories_from_products_json(tmp_path):
    root = write_product_folder(tmp_path / "set", categories=3, products=4, photos=2)
    ts = image_folder(root)
    assert len(ts) == 24 and ts.multi_photo
    assert set(ts.products.tolist()) == {f"c{c}p{p}" for c in range(3) for p in range(4)}
    assert set(ts.labels.tolist()) == {"shape-ellipse", "shape-rectangle", "shape-triangle"}


def test_image_folder_of_labels_makes_each_image_a_product_and_skips_unreadable_files(tmp_path):
    for label in ("red", "blue"):
        (tmp_path / label).mkdir()
        for i in range(6):
            Image.new("RGB", (8, 8), label).save(tmp_path / label / f"{i}.png")
    (tmp_path / "red" / "broken.jpg").write_bytes(b"not an image")
    ts = image_folder(tmp_path)
    assert len(ts) == 12 and not ts.multi_photo and ts.skipped == 1
    assert "1 unreadable skipped" in ts.description


def test_image_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(TrainingError, match="is not a directory"):
        image_folder(tmp_path / "missing")
    (tmp_path / "only").mkdir()
    with pytest.raises(TrainingError, match="holds no images"):
        image_folder(tmp_path)
    for i in range(12):
        Image.new("RGB", (8, 8), "red").save(tmp_path / "only" / f"{i}.png")
    with pytest.raises(TrainingError, match="a single label"):
        image_folder(tmp_path)
    bad = tmp_path / "bad"
    (bad / "x").mkdir(parents=True)
    (bad / "x" / "a.jpg").write_bytes(b"nope")
    with pytest.raises(TrainingError, match="none of the 1 images"):
        image_folder(bad)
    (bad / "products.json").write_text("{not json")
    with pytest.raises(TrainingError, match="products.json is not valid JSON"):
        image_folder(bad)
    (bad / "products.json").write_text(json.dumps([1, 2]))
    with pytest.raises(TrainingError, match="must map product folder"):
        image_folder(bad)
