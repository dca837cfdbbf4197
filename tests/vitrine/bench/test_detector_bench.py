"""`vitrine bench detector` end to end on a small generated catalog (tiny student, one epoch), and the
shop-the-look scoring rule."""

from __future__ import annotations

import json

from tests.vitrine.helpers import TOPICS, write_drawings
from training.hybrid import HEAD_FILE, ClassHead
from training.labelsets import Box
from vision.embedder import create_embedder
from vitrine.bench.detector import format_table, run_detector_bench
from vitrine.bench.shop_the_look import score_answer
from vitrine.demo_catalog import build_demo_catalog


def test_the_detector_bench_teaches_classes_adds_one_and_reports_every_figure(tmp_path):
    source = write_drawings(tmp_path / "drawings", TOPICS, per_topic=8)
    catalog = build_demo_catalog(tmp_path / "catalog", source=source, n_products=64, min_per_category=4)
    r = run_detector_bench(
        data_dir=tmp_path / "data", catalog_dir=catalog.out_dir, classes=2, epochs=1, imgsz=64,
        train_scenes=12, test_scenes=10, speed_images=2, work_dir=tmp_path / "work",
    )  # fmt: skip
    chosen, added = r["settings"]["classes"], r["settings"]["added_class"]
    assert len(chosen) == 2 and added not in chosen
    assert set(r["first"]["per_class"]) == set(chosen)
    assert set(r["added"]["per_class"]) == {*chosen, added}
    assert r["added"]["fine_tuned_from"].endswith(f"{r['first']['key']}/student.pt")
    for run in ("first", "added"):  # both students, on the same held-out scenes by the same rule
        assert set(r[run]["students"]) == {"yolo", "yolo+head", "yolo+head top-3"}
        assert r[run]["serve"] in ("yolo", "yolo+head") and r[run]["student_reused"] is False
        multi, single = r[run]["students"]["yolo+head top-3"], r[run]["students"]["yolo+head"]
        assert set(multi["per_class"]) == set(single["per_class"]) and 0 <= multi["map50"] <= 1
    assert set(r["added"]["students"]["yolo+head"]["per_class"]) == {*chosen, added}
    for f in r["forgetting"].values():
        assert f["change"] == round(f["old_classes_map50_after"] - f["old_classes_map50_before"], 4)
    speeds = ("student_320_img_s", "student_640_img_s", "student_head_320_img_s", "whole_image_img_s")
    assert all(r["speed"][k] > 0 for k in speeds)
    json.dumps(r)
    table = format_table(r)
    assert "mAP50" in table and "(new)" in table and "cores" in table and str(tmp_path / "work") in table
    assert "top-3" in table

    # Again with --reuse: the same scenes and settings, so neither student trains again; only the heads
    # are fitted again, here with the background class and over another embedder (a CLIP of random
    # weights: none is installable offline; where they exist, `--head-embedder configured`).
    clip = create_embedder("clip", cache_dir=tmp_path / "data" / "models", pretrained=None, use_onnx=False)
    again = run_detector_bench(
        data_dir=tmp_path / "data", catalog_dir=catalog.out_dir, classes=2, epochs=1, imgsz=64,
        train_scenes=12, test_scenes=10, speed_images=2, work_dir=tmp_path / "work", reuse=True,
        background_class=True, embedder=clip,
    )  # fmt: skip
    assert again["settings"]["class_head_background"] is True and r["settings"]["class_head_background"] is False
    assert r["settings"]["class_head_embedder"].startswith("efficientnet-lite0@")
    assert again["settings"]["class_head_embedder"] == clip.model_key and clip.model_key.startswith("clip")
    assert f"class head over {clip.model_key}" in format_table(again)
    for run in ("first", "added"):
        assert again[run]["student_reused"] is True and again[run]["key"] == r[run]["key"]
        assert again[run]["students"]["yolo"] == r[run]["students"]["yolo"]  # the same YOLO, the same figures
        head = ClassHead.load(tmp_path / "work" / "students" / r[run]["key"] / HEAD_FILE)
        assert head.background and head.embedder_key == clip.model_key


def test_a_hit_needs_the_product_in_the_top_k_of_the_item_detected_on_it():
    placed = [("boot", Box("shoes", (0, 0, 100, 100))), ("bag", Box("bags", (200, 0, 300, 100)))]
    items = [
        {"label": "image", "box": [0, 0, 400, 200], "products": [{"product_id": "bag"}]},
        {"label": "shoes", "box": [5, 5, 100, 100], "products": [{"product_id": "x"}, {"product_id": "boot"}]},
        {"label": "bags", "box": [150, 0, 250, 100], "products": [{"product_id": "bag"}]},  # IoU 1/3: no match
    ]
    assert score_answer(placed, items, top=5) == {"placed": 2, "located": 1, "hits": 1, "any_item_hits": 2}
    assert score_answer(placed, items, top=1)["hits"] == 0  # boot is second in its item's list


def test_the_head_embedder_option_refuses_an_unknown_one_and_weights_that_do_not_load(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from vitrine.cli import app

    runner = CliRunner()
    monkeypatch.setenv("VITRINE_DATA_DIR", str(tmp_path))
    out = runner.invoke(app, ["bench", "detector", "--head-embedder", "clip"])
    assert out.exit_code == 2 and "--head-embedder must be efficientnet-lite0 or configured" in out.output
    # The configured CLIP's weights do not load: refused before any catalog is built or student trained.
    monkeypatch.setenv("VITRINE_EMBEDDER", "clip")
    monkeypatch.setenv("VITRINE_CLIP_PRETRAINED", str(tmp_path / "missing" / "open_clip_model.safetensors"))
    out = runner.invoke(app, ["bench", "detector", "--head-embedder", "configured"])
    assert out.exit_code == 1 and "--head-embedder configured:" in out.output
    assert not (tmp_path / "demo").exists()
