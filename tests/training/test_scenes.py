"""The catalog teacher's composite scenes, from synthetic RGBA shapes (no catalog or teacher needed)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

import training.scenes as scenes_module
from training.labelsets import read_boxes, read_card
from training.scenes import (
    CatalogCutout,
    SceneSetError,
    build_scene_set,
    compose_scene,
    cutouts_from_photos,
    demo_catalog_photos,
    shop_the_look_scenes,
    split_products,
)

SIZE = 128  # small scenes keep every build well under a second
BLACK = (0, 0, 0)
FEW = {"train": 6, "val": 2, "test": 4}


def shape(fill: tuple[int, int, int], w: int = 90, h: int = 60, kind: str = "ellipse") -> Image.Image:
    """An opaque coloured shape on a transparent canvas, cropped to itself."""
    im = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(im)
    if kind == "ellipse":
        draw.ellipse((0, 0, w - 1, h - 1), fill=fill + (255,))
    else:
        draw.rectangle((0, 0, w - 1, h - 1), fill=fill + (255,))
    return im


def catalog(categories: dict[str, int], photos: int = 2) -> list[CatalogCutout]:
    """`n` products per category, `photos` cut-outs each; each category one colour."""
    out = []
    for k, (category, n) in enumerate(categories.items()):
        colour = tuple(int(c) for c in np.roll([230, 60, 40 + 40 * k], k))
        for p in range(n):
            for v in range(photos):
                kind = "ellipse" if (p + v) % 2 else "rectangle"
                out.append(CatalogCutout(f"{category}-{p}", category, shape(colour, 70 + 5 * p, 50 + 4 * v, kind)))
    return out


def bright_box(image: Image.Image) -> tuple[int, int, int, int] | None:
    """Box of the pixels brighter than half of the item's typical brightness (the item is white, the rest black)."""
    grey = np.asarray(image.convert("L"), np.float32)
    lit = grey > 60
    if not lit.any():
        return None
    ys, xs = np.nonzero(grey > 0.5 * np.median(grey[lit]))
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def test_one_item_box_is_its_visible_alpha_box():
    item = shape((255, 255, 255), 80, 50)
    for seed in range(12):  # turns, flips, scales and frame cuts differ per seed
        image, boxes = compose_scene([(item, "thing")], SIZE, np.random.default_rng(seed), background=BLACK)
        assert image.size == (SIZE, SIZE) and image.mode == "RGB"
        assert len(boxes) == 1 and boxes[0].label == "thing"
        measured = bright_box(image)
        assert measured is not None
        # The expected box is measured from the pixels (where the white item shows): within 1 px.
        assert np.abs(np.subtract(boxes[0].box, measured)).max() <= 1, (seed, boxes[0].box, measured)


def test_occluded_box_shrinks_to_what_shows():
    item = shape((255, 255, 255), 80, 50)
    cover = shape(BLACK, 100, 30, "rectangle")  # as dark as the background: only the first item is lit
    shrunk = 0
    for seed in range(40):
        # Same seed and a flat background: the first item lands in the same place in both scenes.
        _, (alone,) = compose_scene([(item, "a")], SIZE, np.random.default_rng(seed), background=BLACK)
        image, boxes = compose_scene([(item, "a"), (cover, None)], SIZE, np.random.default_rng(seed), background=BLACK)
        assert [b.label for b in boxes] == ["a"]  # the cover is a distractor: pasted, never boxed
        box = boxes[0].box
        assert alone.box[0] <= box[0] and alone.box[1] <= box[1] and box[2] <= alone.box[2] and box[3] <= alone.box[3]
        assert np.abs(np.subtract(box, bright_box(image))).max() <= 1, seed
        area = (box[2] - box[0]) * (box[3] - box[1])
        shrunk += area < (alone.box[2] - alone.box[0]) * (alone.box[3] - alone.box[1])
    assert shrunk >= 3  # a wide cover falls across part of the item in several of 40 scenes


def test_distractors_are_pasted_but_never_boxed():
    image, boxes = compose_scene([(shape((255, 255, 255)), None)], SIZE, np.random.default_rng(0), background=BLACK)
    assert boxes == []
    assert bright_box(image) is not None  # it is in the picture


def test_later_items_never_hide_most_of_an_earlier_one():
    item = shape((255, 255, 255), 80, 60)
    cover = shape(BLACK, 90, 90, "rectangle")
    least = 1.0
    for seed in range(15):
        crowd = [(item, "a")] + [(cover, None)] * 7  # seven big covers: some must be left out
        image, boxes = compose_scene(crowd, SIZE, np.random.default_rng(seed), background=BLACK)
        assert len(boxes) == 1 and np.abs(np.subtract(boxes[0].box, bright_box(image))).max() <= 1, seed
        before, _ = compose_scene([(item, "a")], SIZE, np.random.default_rng(seed), background=BLACK)
        shown = (np.asarray(image.convert("L")) > 127).sum() / (np.asarray(before.convert("L")) > 127).sum()
        least = min(least, shown)
    # Each later item keeps >= 0.5 of an earlier one's alpha in view (pixel counting loses a little).
    assert 0.45 <= least < 0.95, least


def test_split_is_by_product_stratified_and_seeded():
    cutouts = catalog({"a": 10, "b": 5, "c": 2, "d": 1}, photos=3)
    train, test = split_products(cutouts, 0.3, seed=4)
    train_ids, test_ids = {c.product_id for c in train}, {c.product_id for c in test}
    assert not train_ids & test_ids
    assert len(train) + len(test) == len(cutouts)
    held = Counter(c.category for c in {(c.product_id, c.category): c for c in test}.values())
    assert held == {"a": 3, "b": 2, "c": 1}  # round(0.3 n), at least one each side for n >= 2, none of d's one
    assert {c.category for c in train} == {"a", "b", "c", "d"}
    again, _ = split_products(cutouts, 0.3, seed=4)
    assert [c.product_id for c in again] == [c.product_id for c in train]
    others = [{c.product_id for c in split_products(cutouts, 0.3, seed=s)[1]} for s in range(5)]
    assert len({frozenset(o) for o in others}) > 1
    with pytest.raises(SceneSetError, match="held_out"):
        split_products(cutouts, 1.0, seed=0)


@pytest.fixture(scope="module")
def cutouts() -> list[CatalogCutout]:
    return catalog({"cup": 5, "shoe": 4, "lamp": 3, "junk": 4})


@pytest.fixture(scope="module")
def built(cutouts, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scenes") / "set"
    return build_scene_set(
        cutouts, ["shoe", "cup", "lamp"], out, scenes=FEW, size=SIZE, seed=7, rejected={"no_background": 2}
    )


def test_scene_set_card_and_labels(built, cutouts):
    card = read_card(built)
    assert card["names"] == ["shoe", "cup", "lamp"] and card["teacher"] == "catalog"
    assert card["counts"]["train"]["images"] == 6 and card["counts"]["test"]["images"] == 4
    train, test = split_products(cutouts, 0.3, seed=7)
    for side, part in (("train", train), ("test", test)):
        for name in card["names"]:
            assert card["products"][side][name]["n"] == len({c.product_id for c in part if c.category == name})
    assert card["products"]["test"]["cup"]["ids_sha256"] != card["products"]["train"]["cup"]["ids_sha256"]
    assert card["distractors"]["train"]["junk"]["n"] + card["distractors"]["test"]["junk"]["n"] == 4
    assert card["seed"] == 7 and card["size"] == SIZE and card["rejected"] == {"no_background": 2}
    assert card["parameters"]["scenes"] == FEW
    labels = {split: read_boxes(built, split) for split in ("train", "val", "test")}
    ids = [cls for rows in labels["train"].values() for cls, _ in rows]
    assert set(ids) <= {0, 1, 2} and len(set(ids)) >= 2  # classes mix; no distractor has an id
    assert all(rows for split in labels.values() for rows in split.values())  # every scene shows a class
    total = sum(card["boxes_per_class"]["train"].values())
    assert total == len(ids)
    with Image.open(built / "images" / "test" / "test-00000.jpg") as im:
        assert im.size == (SIZE, SIZE)
    assert json.loads((built / "card.json").read_text())["classes"] == ["shoe", "cup", "lamp"]


def test_test_scenes_show_only_held_out_products(cutouts, tmp_path, monkeypatch):
    owner = {id(c.rgba): c.product_id for c in cutouts}
    calls: list[set[str]] = []
    real = scenes_module.compose_scene

    def spy(items, size, rng, *, background=None):
        calls.append({owner[id(im)] for im, _ in items})
        return real(items, size, rng, background=background)

    monkeypatch.setattr(scenes_module, "compose_scene", spy)
    build_scene_set(cutouts, ["cup", "shoe", "lamp"], tmp_path / "s", scenes=FEW, size=64, seed=1)
    train, test = split_products(cutouts, 0.3, seed=1)
    train_ids, test_ids = {c.product_id for c in train}, {c.product_id for c in test}
    assert len(calls) == sum(FEW.values())
    for used in calls[: FEW["train"] + FEW["val"]]:
        assert used <= train_ids
    for used in calls[FEW["train"] + FEW["val"] :]:
        assert used <= test_ids


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_inputs_and_seed_give_the_same_set(cutouts, tmp_path):
    a, b, c = (
        build_scene_set(cutouts, ["cup", "shoe"], tmp_path / name, scenes=FEW, size=96, seed=seed)
        for name, seed in (("a", 3), ("b", 3), ("c", 4))
    )
    assert _files(a).keys() == _files(b).keys()
    assert {k: v for k, v in _files(a).items() if k != "data.yaml"} == {
        k: v
        for k, v in _files(b).items()
        if k != "data.yaml"  # data.yaml holds the absolute path
    }
    assert read_boxes(a, "train") != read_boxes(c, "train")


def test_refuses_a_class_without_cut_outs_or_with_too_few_products(cutouts, tmp_path):
    with pytest.raises(SceneSetError, match=r"'hat' has 0.*at least 3"):
        build_scene_set(cutouts, ["cup", "hat"], tmp_path / "x", scenes=FEW, size=64)
    few = catalog({"cup": 4, "mug": 2})
    with pytest.raises(SceneSetError, match=r"'mug' has 2.*at least 3"):
        build_scene_set(few, ["cup", "mug"], tmp_path / "y", scenes=FEW, size=64)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    (tmp_path / "z").mkdir()
    with pytest.raises(SceneSetError, match="already exists"):
        build_scene_set(cutouts, ["cup"], tmp_path / "z", scenes=FEW, size=64)
    with pytest.raises(SceneSetError, match="scenes"):
        build_scene_set(cutouts, ["cup"], tmp_path / "w", scenes={"dev": 3}, size=64)
    with pytest.raises(SceneSetError, match="distinct"):
        build_scene_set(cutouts, ["cup", "cup"], tmp_path / "w", scenes=FEW, size=64)


class Refused(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def test_cutouts_from_photos_counts_refusals():
    def cut(photo: Image.Image) -> Image.Image:
        if photo.width < 50:
            raise Refused("too_small")
        if photo.getpixel((0, 0)) == (0, 0, 0):
            return Image.new("RGBA", photo.size, (0, 0, 0, 0))  # nothing left after cutting
        rgba = Image.new("RGBA", photo.size, (0, 0, 0, 0))
        rgba.paste(shape((200, 10, 10), 40, 20), (10, 30))
        return rgba

    photos = [
        ("p1", "cup", Image.new("RGB", (100, 100), "white")),
        ("p2", "cup", Image.new("RGB", (20, 20), "white")),
        ("p3", "cup", Image.new("RGB", (100, 100), "black")),
    ]
    cutouts, rejected = cutouts_from_photos(photos, cut=cut)
    assert [(c.product_id, c.rgba.size, c.rgba.mode) for c in cutouts] == [("p1", (40, 20), "RGBA")]
    assert rejected == {"too_small": 1, "empty": 1}

    def broken(photo):
        raise RuntimeError("a bug, not a refusal")

    with pytest.raises(RuntimeError):
        cutouts_from_photos(photos, cut=broken)


def test_shop_the_look_scenes_say_which_product_is_where():
    colours = {"red": (230, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 230)}
    cutouts = [
        CatalogCutout(f"{name}-{p}", name, shape(rgb, 80, 60, "rectangle"))
        for name, rgb in colours.items()
        for p in range(3)
    ]
    looks = shop_the_look_scenes(cutouts, 4, np.random.default_rng(0), size=SIZE, k=3)
    assert len(looks) == 4
    for image, placed in looks:
        assert image.size == (SIZE, SIZE)
        assert len(placed) == 3 and len({b.label for _, b in placed}) == 3  # three categories
        for product_id, box in placed:
            assert product_id.startswith(box.label + "-")
            x0, y0, x1, y1 = box.box
            centre = np.asarray(image.convert("RGB"), np.int16)[int((y0 + y1) / 2), int((x0 + x1) / 2)]
            assert int(np.argmax(centre)) == list(colours).index(box.label)  # the product's colour is there


def test_demo_catalog_photos_reads_first_or_all_photos(tmp_path):
    (tmp_path / "images").mkdir()
    rows = [
        {"id": "a", "category": "cups", "image_urls": ["a-0.jpg", "a-1.jpg"]},
        {"id": "b", "category": "hats", "image_urls": ["missing.jpg"]},
    ]
    for name in ("a-0.jpg", "a-1.jpg"):
        Image.new("RGB", (40, 30), "white").save(tmp_path / "images" / name)
    (tmp_path / "catalog.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n")
    first = demo_catalog_photos(tmp_path)
    assert [(pid, cat, im.size, im.mode) for pid, cat, im in first] == [("a", "cups", (40, 30), "RGB")]
    assert len(demo_catalog_photos(tmp_path, all_photos=True)) == 2
    # By design: a drawing's colour variants are one product, so a split by product keeps them together.
    rows += [{"id": "a--green", "category": "cups", "image_urls": ["a-0.jpg"], "attributes": {"design": "a"}}]
    rows[0]["attributes"] = {"design": "a"}
    (tmp_path / "catalog.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert [pid for pid, _, _ in demo_catalog_photos(tmp_path)] == ["a", "a--green"]
    assert [pid for pid, _, _ in demo_catalog_photos(tmp_path, by_design=True)] == ["a", "a"]
    with pytest.raises(SceneSetError, match="catalog.jsonl"):
        demo_catalog_photos(tmp_path / "nowhere")


def test_default_cutter_cuts_plain_background_photos():
    photo = Image.new("RGB", (120, 100), (248, 248, 246))
    ImageDraw.Draw(photo).rectangle((30, 20, 89, 69), fill=(200, 30, 30))
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (100, 120, 3), dtype=np.uint8))
    cutouts, rejected = cutouts_from_photos([("p1", "cup", photo), ("p2", "cup", noise)])  # vision.cutout.cut_out
    assert [c.product_id for c in cutouts] == ["p1"]
    assert abs(cutouts[0].rgba.width - 60) <= 2 and abs(cutouts[0].rgba.height - 50) <= 2
    assert rejected == {"no_plain_background": 1}
