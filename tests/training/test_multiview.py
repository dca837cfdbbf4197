"""The same-product set built from a tiny synthetic source of RGBA cut-outs (openclipart need not be installed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.training.helpers import HUES, write_cutout_tree, write_unusable
from training.multiview import build_multiview_set, cutout_problem, scan_drawings, title_of
from training.photoshoot import whitish
from vision.datasets import DatasetError

SIZE = 128  # small photos keep each build well under a second


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cutouts")
    write_cutout_tree(root, per_category=6)
    write_unusable(root)
    return root


@pytest.fixture(scope="module")
def built(source, tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("built") / "set"
    return out, build_multiview_set(source, out, products=12, photos=3, size=SIZE, seed=3, min_per_category=4)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _hsv(photo: Path) -> np.ndarray:
    return np.asarray(Image.open(photo).convert("HSV"), np.float32) / 255


def _border(photo: Path, width: int = 4) -> np.ndarray:
    rgb = np.asarray(Image.open(photo).convert("RGB"), np.float32)
    mask = np.ones(rgb.shape[:2], bool)
    mask[width:-width, width:-width] = False
    return rgb[mask]


def test_same_arguments_give_byte_identical_files(source, built, tmp_path):
    out, _ = built
    again = build_multiview_set(
        source, tmp_path / "again", products=12, photos=3, size=SIZE, seed=3, min_per_category=4
    )
    assert _files(tmp_path / "again") == _files(out)
    assert again.categories == built[1].categories
    other = build_multiview_set(
        source, tmp_path / "other", products=12, photos=3, size=SIZE, seed=4, min_per_category=4
    )
    assert _files(tmp_path / "other") != _files(out)
    assert other.products == 12


def test_writes_an_image_folder_of_products_with_their_metadata(source, built):
    out, summary = built
    meta = json.loads((out / "products.json").read_text())
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert folders == sorted(meta) and len(folders) == 12
    for product, info in meta.items():
        photos = sorted(p.name for p in (out / product).iterdir())
        assert photos == ["0.jpg", "1.jpg", "2.jpg"]
        for name in photos:
            with Image.open(out / product / name) as im:
                assert (im.format, im.size, im.mode) == ("JPEG", (SIZE, SIZE), "RGB")
        assert (source / info["source"]).is_file() and info["source"].startswith(info["category"] + "/")
        assert info["title"] == title_of(Path(info["source"]))
        assert [p["kind"] for p in info["photos"]] == ["studio", "street", "street"]
    # 12 products over the 3 categories with >= 4 usable cut-outs (junk has none): 4 each.
    assert summary.categories == dict.fromkeys(HUES, 4)
    assert sum(summary.categories.values()) == 12
    assert summary.usable == 18 and summary.scanned == 25
    record = json.loads((out / "dataset.json").read_text())
    assert record["seed"] == 3 and record["usable"] == 18 and "seconds" not in record


def test_the_filter_names_why_each_drawing_is_skipped(tmp_path):
    write_cutout_tree(tmp_path, per_category=6)
    planted = write_unusable(tmp_path)
    for reason, path in planted.items():
        assert cutout_problem(path) == reason, path.name
    # A greyscale copy beside its colour drawing is that product again, not another one.
    colour = tmp_path / "toys" / "ellipse_00.png"
    Image.open(colour).convert("LA").save(tmp_path / "toys" / "ellipse_00_bw.png")
    assert cutout_problem(tmp_path / "toys" / "ellipse_00_bw.png") is None
    drawings, rejected, scanned = scan_drawings(tmp_path)
    assert dict(rejected) == dict.fromkeys(planted, 1) | {"bw_twin": 1}
    assert {d.category for d in drawings} == set(HUES) and scanned == 18 + len(planted) + 1
    assert len(drawings) == 18 and colour in {d.path for d in drawings}
    assert scan_drawings(tmp_path, exclude=("food",))[2] == 18 + len(planted) + 1 - 6  # `food` covers food/fruit
    assert title_of(Path("fruit/red_apple-02.png")) == "Red apple"


def test_studio_is_on_white_and_street_shots_are_not(built):
    out, _ = built
    for product in json.loads((out / "products.json").read_text()):
        studio = _border(out / product / "0.jpg")
        assert whitish(studio).mean() >= 0.95, product
        for k in (1, 2):
            assert whitish(_border(out / product / f"{k}.jpg")).mean() < 0.5, (product, k)


def test_the_product_shows_in_every_photo_in_its_own_colours(built):
    """Each category has one saturated hue and scenery comes from other categories: the product's
    pixels are those of its hue, inside the recorded box, in every photo."""
    out, _ = built
    meta = json.loads((out / "products.json").read_text())
    for product, info in meta.items():
        hue = HUES[info["category"]]
        for k, shot in enumerate(info["photos"]):
            hsv = _hsv(out / product / f"{k}.jpg")
            distance = np.abs((hsv[..., 0] - hue + 0.5) % 1.0 - 0.5)  # circular, in turns
            mine = (distance < 20 / 360) & (hsv[..., 1] > 0.6) & (hsv[..., 2] > 0.25)
            x0, y0, x1, y1 = shot["box"]
            inside = np.zeros_like(mine)
            inside[max(0, y0 - 3) : y1 + 3, max(0, x0 - 3) : x1 + 3] = True
            assert shot["visible"] >= 0.4, (product, k, shot)
            # At least a fifth of the box is the product's colour, even after relighting and JPEG ...
            assert mine[y0:y1, x0:x1].mean() >= 0.2, (product, k, shot)
            # ... and that colour hardly appears outside the box (scenery is other hues).
            assert mine[~inside].sum() <= 0.02 * (~inside).sum(), (product, k, shot)
        studio = info["photos"][0]
        assert studio["visible"] == 1.0  # whole product in frame, nothing in front
        x0, y0, x1, y1 = studio["box"]
        assert abs((x0 + x1) / 2 - SIZE / 2) <= 2 and abs((y0 + y1) / 2 - SIZE / 2) <= 0.05 * SIZE


def test_street_shots_vary_scale_rotation_light_and_quality(source, tmp_path):
    build_multiview_set(source, tmp_path / "s", products=18, photos=4, size=64, seed=0, min_per_category=4)
    street = [
        p for info in json.loads((tmp_path / "s" / "products.json").read_text()).values() for p in info["photos"][1:]
    ]
    assert all(0.35 <= p["scale"] <= 0.9 and abs(p["rotation"]) <= 20 and 60 <= p["quality"] <= 90 for p in street)
    assert max(p["scale"] for p in street) - min(p["scale"] for p in street) > 0.3
    assert {p["background"] for p in street} == {"scene", "scene+drawing"}
    assert any(p["cropped"] for p in street) and any("occluder_source" in p for p in street)


def test_refuses_a_missing_source_with_the_install_hint(tmp_path):
    with pytest.raises(DatasetError, match="apt-get install openclipart-png"):
        build_multiview_set(tmp_path / "nowhere", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_refuses_a_source_too_small_for_the_request(source, tmp_path):
    with pytest.raises(DatasetError, match=r"18 usable cut-outs of 25 drawings.*need 50 products"):
        build_multiview_set(source, tmp_path / "out", products=50, size=SIZE, min_per_category=4)
    with pytest.raises(DatasetError, match="0 categories with >= 7"):
        build_multiview_set(source, tmp_path / "out", products=2, size=SIZE, min_per_category=7)
    single = write_cutout_tree(tmp_path / "single", hues={"toys": 0.3})
    with pytest.raises(DatasetError, match=">= 2 categories"):
        build_multiview_set(single, tmp_path / "out", products=2, size=SIZE, min_per_category=1)
    with pytest.raises(DatasetError, match="photos >= 2"):
        build_multiview_set(source, tmp_path / "out", photos=1)
    assert not (tmp_path / "out").exists()


def test_replaces_only_an_earlier_build_and_only_when_asked(source, tmp_path):
    out = tmp_path / "set"
    args = {"products": 3, "photos": 2, "size": 64, "min_per_category": 4}
    build_multiview_set(source, out, **args)
    with pytest.raises(DatasetError, match="--overwrite"):
        build_multiview_set(source, out, **args)
    (out / "stale").mkdir()
    build_multiview_set(source, out, overwrite=True, **args)
    assert not (out / "stale").exists() and len(json.loads((out / "products.json").read_text())) == 3
    other = tmp_path / "photos"
    other.mkdir()
    (other / "holiday.jpg").write_bytes(b"keep me")
    with pytest.raises(DatasetError, match="holds no earlier build"):
        build_multiview_set(source, other, overwrite=True, **args)
    assert (other / "holiday.jpg").read_bytes() == b"keep me"


def test_a_build_that_fails_half_way_leaves_nothing(source, tmp_path, monkeypatch):
    import training.multiview as multiview

    real, calls = multiview.render_product, []

    def fail_on_the_third(*args, **kwargs):  # a disk or decoder failure in the middle of the set
        calls.append(1)
        if len(calls) == 3:
            raise OSError("No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(multiview, "render_product", fail_on_the_third)
    with pytest.raises(OSError, match="No space left"):
        build_multiview_set(source, tmp_path / "set", products=6, photos=2, size=64, min_per_category=4)
    assert list(tmp_path.iterdir()) == []
