"""The YOLO student on a tiny synthetic scene set: training, fine-tuning, evaluation, ONNX export, serving.

Random-init YOLO11n at 64 px for one or two epochs learns next to nothing, so these tests check the
mechanics (files, names, callbacks, metric shapes, graph equivalence), not accuracy; accuracy is the
benchmark's job. The student is trained once per module (~15 s on 2 cores).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from training.labelsets import Box, LabelledImage, LabelSet, read_boxes, write_label_set
from training.student import (
    STUDENT_CARD,
    StudentConfig,
    StudentError,
    dataset_names,
    evaluate_student,
    export_onnx,
    inference_speed,
    student_detector,
    train_student,
)
from vision.detector import WholeImageDetector
from vision.yolo import YoloDetector

GREY, RED, BLUE, GREEN = (128, 128, 128), (220, 30, 30), (30, 30, 220), (30, 190, 30)
SPLIT_SIZES = {"train": 24, "val": 8, "test": 8}
FAST = {"imgsz": 64, "batch": 8, "close_mosaic": 0, "device": "cpu"}


def scene(rng: random.Random, names: list[str], side: int) -> tuple[Image.Image, list[Box]]:
    """Grey canvas with 1-3 shapes: red squares, blue circles, green triangles, boxes exact."""
    image = Image.new("RGB", (side, side), GREY)
    draw = ImageDraw.Draw(image)
    boxes = []
    for _ in range(rng.randint(1, 3)):
        label, size = rng.choice(names), rng.randint(side // 5, side // 2)
        x, y = rng.randint(0, side - size), rng.randint(0, side - size)
        corners = (x, y, x + size - 1, y + size - 1)
        if label == "square":
            draw.rectangle(corners, fill=RED)
        elif label == "circle":
            draw.ellipse(corners, fill=BLUE)
        else:
            draw.polygon([(x + size / 2, y), (x + size - 1, y + size - 1), (x, y + size - 1)], fill=GREEN)
        boxes.append(Box(label, (x, y, x + size, y + size)))
    return image, boxes


def write_scenes(out: Path, names: list[str], seed: int, splits: dict[str, int] = SPLIT_SIZES) -> Path:
    rng = random.Random(seed)
    items = []
    for split, n in splits.items():
        for i in range(n):
            image, boxes = scene(rng, names, side=rng.choice((64, 80, 96)))
            items.append(LabelledImage(f"{split}-{i:02d}", image, boxes, split))
    return write_label_set(LabelSet(names=names, images=items, card={"teacher": "synthetic"}), out)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return write_scenes(tmp_path_factory.mktemp("sets") / "shapes", ["square", "circle"], seed=0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shapes, cache):
    calls = []
    threads_before = torch.get_num_threads()
    result = train_student(
        shapes / "data.yaml",
        tmp_path_factory.mktemp("student"),
        StudentConfig(epochs=2, **FAST),
        progress=lambda *args: calls.append(args),
        cache_dir=cache,
    )
    return result, calls, threads_before


def test_training_writes_the_student_its_card_and_reports_every_epoch(trained):
    result, calls, threads_before = trained
    assert result.weights.name == "student.pt" and result.weights.stat().st_size > 1_000_000
    assert result.names == ["square", "circle"]
    assert result.device == "cpu" and result.epochs_run == 2
    assert [(epoch, total) for epoch, total, _ in calls] == [(1, 2), (2, 2)]
    seconds = [s for _, _, s in calls]
    assert 0 < seconds[0] < seconds[1] <= result.seconds
    assert set(result.metrics) == {"map50", "map50_95", "precision", "recall"}
    assert all(0.0 <= v <= 1.0 for v in result.metrics.values())
    card = json.loads((result.weights.parent / STUDENT_CARD).read_text())
    assert card["names"] == result.names and card["config"]["epochs"] == 2 and card["config"]["mixup"] == 0.0
    # ultralytics lowers torch's process-wide thread count during training; it must come back
    assert torch.get_num_threads() == threads_before


def test_evaluation_gives_unit_interval_metrics_per_class_on_the_test_split(trained, shapes, cache):
    result, _, _ = trained
    report = evaluate_student(result.weights, shapes / "data.yaml", split="test", imgsz=64, cache_dir=cache)
    assert 0.0 <= report["map50_95"] <= report["map50"] <= 1.0
    assert list(report["per_class"]) == ["square", "circle"]
    # instances counted by ultralytics must be the boxes written into the test labels
    truth = Counter(cls for rows in read_boxes(shapes, "test").values() for cls, _ in rows)
    for i, name in enumerate(["square", "circle"]):
        row = report["per_class"][name]
        assert row["instances"] == truth[i]
        assert row["ap50"] is None if truth[i] == 0 else 0.0 <= row["ap50"] <= 1.0
    assert report["images"] == SPLIT_SIZES["test"] and report["seconds"] > 0
    assert not list(Path.cwd().glob("runs")), "val must not write into the working directory"


def test_evaluation_of_a_missing_split_or_weights_says_so(trained, shapes, cache):
    result, _, _ = trained
    with pytest.raises(StudentError, match="no images in split 'holdout'"):
        evaluate_student(result.weights, shapes / "data.yaml", split="holdout", cache_dir=cache)
    with pytest.raises(StudentError, match="weights not found"):
        evaluate_student(shapes / "nope.pt", shapes / "data.yaml", cache_dir=cache)


def test_onnx_export_runs_in_onnxruntime_and_matches_torch(trained, shapes, cache):
    import onnxruntime as ort
    from ultralytics import YOLO

    result, _, _ = trained
    path = export_onnx(result.weights, imgsz=64, cache_dir=cache)
    assert path == result.weights.with_suffix(".onnx") and path.is_file()
    image = Image.open(sorted((shapes / "images" / "test").glob("*.jpg"))[0]).convert("RGB").resize((64, 64))
    x = np.asarray(image, np.float32).transpose(2, 0, 1)[None] / 255.0
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {session.get_inputs()[0].name: x})[0]
    model = YOLO(str(result.weights)).model.float().eval()
    with torch.no_grad():
        torch_out = model(torch.from_numpy(x))[0].numpy()
    assert onnx_out.shape == torch_out.shape == (1, 4 + 2, 84)  # boxes + 2 class scores at 8x8+4x4+2x2 anchors
    np.testing.assert_allclose(onnx_out, torch_out, rtol=1e-3, atol=1e-3)
    # served through the detector, the ONNX graph gives the torch student's boxes
    pt_dets = student_detector(result.weights, cache_dir=cache, imgsz=64, conf=0.0).detect([image])[0]
    onnx_dets = student_detector(path, cache_dir=cache, imgsz=64, conf=0.0).detect([image])[0]
    assert [d.label for d in pt_dets[:5]] == [d.label for d in onnx_dets[:5]]
    np.testing.assert_allclose([d.box for d in pt_dets[:5]], [d.box for d in onnx_dets[:5]], atol=0.5)


def test_the_student_serves_as_a_yolo_detector_with_its_own_class_names(trained, shapes, cache):
    result, _, _ = trained
    detector = YoloDetector(
        cache_dir=cache, weights=result.weights, classes=None, label_map={}, trim_whole=False, conf=0.0, imgsz=64
    )
    image = Image.open(sorted((shapes / "images" / "val").glob("*.jpg"))[0])
    (dets,) = detector.detect([image])
    assert dets, "conf=0 must yield boxes"
    assert {d.label for d in dets} <= {"square", "circle"}
    assert {d.kind for d in dets} == {"item"}


def test_fine_tuning_adds_a_class_after_the_old_ones_and_keeps_every_base_tensor(trained, tmp_path, cache):
    result, _, _ = trained
    three = write_scenes(tmp_path / "three", ["square", "circle", "triangle"], seed=1, splits={"train": 16, "val": 8})
    tuned = train_student(
        three / "data.yaml", tmp_path / "tuned", StudentConfig(epochs=1, base=result.weights, **FAST), cache_dir=cache
    )
    assert tuned.names == ["square", "circle", "triangle"]
    # every base tensor started the fine-tune unchanged; the class layer's first rows are the old classes
    assert tuned.transfer["kept"] == tuned.transfer["total"] > 400
    assert tuned.transfer["old_names"] == ["square", "circle"]
    assert tuned.config["base"] == str(result.weights)
    (dets,) = student_detector(tuned.weights, cache_dir=cache, imgsz=64, conf=0.0).detect([Image.new("RGB", (64, 64))])
    assert {d.label for d in dets} <= {"square", "circle", "triangle"}


def test_fine_tuning_refuses_a_dataset_that_drops_or_reorders_old_classes(trained, shapes, tmp_path, cache):
    result, _, _ = trained
    swapped = tmp_path / "data.yaml"
    swapped.write_text(
        f'path: "{shapes}"\ntrain: images/train\nval: images/val\nnames:\n  0: "circle"\n  1: "square"\n'
    )
    with pytest.raises(StudentError, match=r"must start with the base student's \['square', 'circle'\]"):
        train_student(swapped, tmp_path / "out", StudentConfig(epochs=1, base=result.weights, **FAST), cache_dir=cache)
    assert not (tmp_path / "out").exists()


def test_bad_datasets_fail_with_a_clear_message(tmp_path, cache):
    with pytest.raises(StudentError, match="not readable YAML"):
        train_student(tmp_path / "missing.yaml", tmp_path / "out", StudentConfig(**FAST), cache_dir=cache)
    no_val = write_scenes(tmp_path / "no-val", ["square"], seed=2, splits={"train": 4})
    with pytest.raises(StudentError, match="the val split has no images"):
        train_student(no_val / "data.yaml", tmp_path / "out", StudentConfig(**FAST), cache_dir=cache)
    (tmp_path / "bad.yaml").write_text("names: {}\n")
    with pytest.raises(StudentError, match="class names"):
        dataset_names(tmp_path / "bad.yaml")
    assert dataset_names(no_val / "data.yaml") == ["square"]


def test_inference_speed_of_a_student_and_the_whole_image_detector(trained, cache):
    result, _, _ = trained
    images = [Image.new("RGB", (96, 96), GREY) for _ in range(3)]
    threads_before = torch.get_num_threads()
    student = inference_speed(result.weights, images, imgsz=64, repeats=1, cache_dir=cache)
    whole = inference_speed(WholeImageDetector(), images, repeats=1)
    assert student > 0 and whole > 0
    assert torch.get_num_threads() == threads_before
    with pytest.raises(StudentError, match="at least one image"):
        inference_speed(WholeImageDetector(), [])


@pytest.mark.skipif(torch.cuda.is_available(), reason="asks for a GPU this machine lacks")
def test_asking_for_a_missing_gpu_is_a_clear_error(shapes, tmp_path, cache):
    with pytest.raises(StudentError, match="training on .* failed"):
        train_student(shapes / "data.yaml", tmp_path / "out", StudentConfig(**{**FAST, "device": "0"}), cache_dir=cache)
