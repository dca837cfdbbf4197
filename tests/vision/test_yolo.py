"""The yolo detector with a randomly initialised YOLO11n (no weights exist offline), and its failure modes."""

from __future__ import annotations

import os
import time

import pytest

from vision import yolo as yolo_module
from vision.detector import create_detector
from vision.image import ImageError, load_image
from vision.items import extract_items
from vision.model import ModelLoadError

# A random YOLO11n names its 80 classes "0".."79": map a few like the COCO product list would.
CLASSES = {"0", "1", "2", "3"}
LABELS = {"0": "bag", "1": "lamp"}


@pytest.fixture(scope="module")
def random_yolo(model_cache):
    det = create_detector(
        "yolo",
        cache_dir=model_cache,
        weights="yolo11n.yaml",
        classes=CLASSES,
        label_map=LABELS,
        context_classes={"4"},
        conf=0.0,
        max_det=40,
        imgsz=320,
    )
    det.load()
    return det


def test_ultralytics_is_configured_offline_and_project_owned(random_yolo, model_cache):
    assert os.environ["YOLO_OFFLINE"] == "1" and os.environ["YOLO_AUTOINSTALL"] == "0"
    config = model_cache / "ultralytics"
    if os.environ["YOLO_CONFIG_DIR"] == str(config.resolve()):  # else an outer conftest chose one
        assert (config / "Ultralytics" / "Arial.ttf").stat().st_size > 100_000


def test_detections_are_filtered_relabelled_and_inside_the_image(random_yolo, photos):
    images = [photos["bus"], photos["zidane"].resize((320, 180))]
    results = random_yolo.detect(images)
    assert len(results) == 2
    for image, dets in zip(images, results):
        assert dets[0].kind == "whole"
        others = dets[1:]
        assert others, "conf=0 on a random model must yield boxes"
        assert len(others) <= 40
        for d in others:
            assert d.label in {"bag", "lamp", "2", "3", "4"}
            assert d.kind == ("context" if d.label == "4" else "item")
            x0, y0, x1, y1 = d.box
            assert -1 <= x0 <= x1 <= image.width + 1 and -1 <= y0 <= y1 <= image.height + 1


def test_random_yolo_boxes_through_the_item_policy(random_yolo, photos):
    image = photos["bus"]
    (dets,) = random_yolo.detect([image])
    items = extract_items(image, dets, min_score=0.0, min_area=0.0, max_items=5)
    assert 1 <= len(items) <= 5 and items[0].detection.kind == "whole"
    assert all(it.crop.width >= 1 and it.crop.height >= 1 for it in items)
    strict = extract_items(image, dets, min_score=1.0)  # no random box is that sure
    assert [it.detection.kind for it in strict] == ["whole"]


def test_image_loading_is_unaffected_by_ultralytics_pil_patch(random_yolo):
    # ultralytics swaps PIL.Image.open for a wrapper that tries to pip-install pi-heif.
    with pytest.raises(ImageError) as err:
        load_image(b"definitely not an image, just text\n")
    assert err.value.reason == "not_an_image"


def test_missing_local_weights_fail_fast(tmp_path):
    det = create_detector("yolo", cache_dir=tmp_path, weights=str(tmp_path / "nope" / "best.pt"))
    started = time.monotonic()
    with pytest.raises(ModelLoadError, match="not found"):
        det.load()
    assert time.monotonic() - started < 10


def test_unknown_hub_name_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="not an ultralytics asset"):
        create_detector("yolo", cache_dir=tmp_path, weights="yolo-made-up.pt").load()


def test_hub_name_offline_fails_fast_with_a_hint(tmp_path):
    if yolo_module._check_reachable(yolo_module.HUB_HOST, timeout=3) is None:
        pytest.skip("this machine reaches github.com; the offline path cannot be observed")
    started = time.monotonic()
    with pytest.raises(ModelLoadError, match="VITRINE_YOLO_WEIGHTS"):
        create_detector("yolo", cache_dir=tmp_path, weights="yolo11n.pt").load()
    assert time.monotonic() - started < 15


def test_a_hanging_download_is_abandoned(tmp_path, monkeypatch):
    monkeypatch.setattr(yolo_module, "_check_reachable", lambda host, timeout=5.0: None)
    monkeypatch.setattr(yolo_module, "_hub_download", lambda name, target: time.sleep(60))
    det = create_detector("yolo", cache_dir=tmp_path, weights="yolo11n.pt", download_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(ModelLoadError, match="did not finish"):
        det.load()
    assert time.monotonic() - started < 5


def test_a_cached_hub_download_is_reused_without_network(tmp_path, monkeypatch, random_yolo):
    calls = []
    monkeypatch.setattr(yolo_module, "_hub_download", lambda name, target: calls.append(name))
    cached = tmp_path / "yolo" / "yolo11n.pt"
    cached.parent.mkdir(parents=True)
    random_yolo._model.save(str(cached))  # a real checkpoint file, stands in for the downloaded one
    det = create_detector("yolo", cache_dir=tmp_path, weights="yolo11n.pt")
    det.load()
    assert det.weights_path == cached and calls == []


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # ultralytics' exporter internals
def test_a_local_onnx_export_runs_through_onnxruntime(random_yolo, tmp_path, monkeypatch, photos):
    from ultralytics import YOLO

    monkeypatch.chdir(tmp_path)  # ultralytics writes the export next to the (yaml) model: here
    exported = YOLO("yolo11n.yaml").export(format="onnx", imgsz=320, simplify=False)
    det = create_detector(
        "yolo", cache_dir=tmp_path, weights=str(exported), classes=None, conf=0.0, max_det=10, imgsz=320
    )
    (dets,) = det.detect([photos["bus"]])
    assert det.weights_path.suffix == ".onnx"
    assert dets[0].kind == "whole" and 1 < len(dets) <= 11


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores to tell 1 thread from all")
def test_importing_ultralytics_through_vision_keeps_torch_multithreaded(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys; from vision.yolo import prepare_ultralytics; prepare_ultralytics(sys.argv[1]); "
        "import ultralytics, torch; print(torch.get_num_threads())"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "YOLO_CONFIG_DIR")}
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env=env, check=True
    )
    assert int(out.stdout.strip().splitlines()[-1]) == os.cpu_count()


def test_detection_restores_torch_thread_count(random_yolo, photos):
    import torch

    random_yolo.detect([photos["zidane"]])
    # ultralytics would leave cores - 1 threads (1 on a 2-core machine) after its predict.
    assert torch.get_num_threads() == random_yolo._torch_threads
    if (os.cpu_count() or 1) == 2 and os.environ.get("OMP_NUM_THREADS") in (None, "2"):
        assert random_yolo._torch_threads == 2
