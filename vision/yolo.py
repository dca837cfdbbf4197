"""The `yolo` detector: ultralytics YOLO from a hub name or a local .pt/.onnx file, offline-safe."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import socket
import sys
import threading
from collections.abc import Iterable
from pathlib import Path

from PIL import Image

from vision.detector import Detection, Detector, whole_image_detection
from vision.model import ModelLoadError

log = logging.getLogger(__name__)

# COCO classes that are products a retailer sells, and the label we store for each. Everything
# else (cars, animals, food, traffic lights) is not an item; `person` is kept only as context.
COCO_PRODUCT_LABELS: dict[str, str] = {
    "backpack": "bag",
    "handbag": "bag",
    "suitcase": "luggage",
    "umbrella": "umbrella",
    "tie": "tie",
    "bottle": "bottle",
    "wine glass": "glass",
    "cup": "cup",
    "fork": "cutlery",
    "knife": "cutlery",
    "spoon": "cutlery",
    "bowl": "bowl",
    "chair": "chair",
    "couch": "sofa",
    "potted plant": "plant",
    "bed": "bed",
    "dining table": "table",
    "toilet": "toilet",
    "tv": "television",
    "laptop": "laptop",
    "mouse": "mouse",
    "remote": "remote",
    "keyboard": "keyboard",
    "cell phone": "phone",
    "microwave": "microwave",
    "oven": "oven",
    "toaster": "toaster",
    "sink": "sink",
    "refrigerator": "refrigerator",
    "book": "book",
    "clock": "clock",
    "vase": "vase",
    "scissors": "scissors",
    "teddy bear": "toy",
    "hair drier": "hair dryer",
    "toothbrush": "toothbrush",
    "frisbee": "frisbee",
    "skis": "skis",
    "snowboard": "snowboard",
    "sports ball": "ball",
    "kite": "kite",
    "baseball bat": "baseball bat",
    "baseball glove": "baseball glove",
    "skateboard": "skateboard",
    "surfboard": "surfboard",
    "tennis racket": "tennis racket",
    "bicycle": "bicycle",
}
CONTEXT_CLASSES: tuple[str, ...] = ("person",)
HUB_HOST = "github.com"  # ultralytics release assets live on GitHub


def prepare_ultralytics(config_dir: Path, threads: int = 0) -> None:
    """Point ultralytics at a project-owned, offline config dir with a local font, before its first import."""
    config_dir = Path(config_dir).resolve()
    user_dir = config_dir / "Ultralytics"  # ultralytics appends this to YOLO_CONFIG_DIR
    user_dir.mkdir(parents=True, exist_ok=True)
    # Its plotting/training calls check_font("Arial.ttf"), which downloads even when offline.
    font = _package_dir("matplotlib") / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
    for target in (config_dir / "Arial.ttf", user_dir / "Arial.ttf"):
        if not target.exists() and font.is_file():
            shutil.copyfile(font, target)
    wanted = {
        "YOLO_OFFLINE": "1",
        "YOLO_AUTOINSTALL": "0",
        "YOLO_CONFIG_DIR": str(config_dir),
        # Importing ultralytics sets OMP_NUM_THREADS=1 when unset ("for training"): torch
        # imported after it would then run inference, ours included, on a single core.
        "OMP_NUM_THREADS": str(threads if threads > 0 else os.cpu_count() or 1),
    }
    for key, value in wanted.items():
        os.environ.setdefault(key, value)  # an operator's explicit choice wins
    if "ultralytics" in sys.modules and os.environ["YOLO_CONFIG_DIR"] != str(config_dir):
        log.warning("ultralytics was imported before vision configured it; it uses %s", os.environ["YOLO_CONFIG_DIR"])


class YoloDetector(Detector):
    """COCO YOLO boxes, filtered to product classes (allow-list), relabelled, person kept as context."""

    name = "yolo"

    def __init__(
        self,
        *,
        cache_dir: Path,
        weights: str | Path = "yolo11n.pt",
        classes: Iterable[str] | None = tuple(COCO_PRODUCT_LABELS),
        label_map: dict[str, str] | None = None,
        context_classes: Iterable[str] = CONTEXT_CLASSES,
        conf: float = 0.1,
        iou: float = 0.7,
        imgsz: int = 640,
        max_det: int = 50,
        trim_whole: bool = True,
        threads: int = 0,
        download_timeout: float = 300.0,
    ):
        super().__init__()
        self.cache_dir = Path(cache_dir)
        self.weights = str(weights)
        self.classes = None if classes is None else frozenset(classes)
        self.label_map = dict(COCO_PRODUCT_LABELS if label_map is None else label_map)
        self.context_classes = frozenset(context_classes)
        self.conf, self.iou, self.imgsz, self.max_det = conf, iou, imgsz, max_det
        self.trim_whole = trim_whole
        self.threads = threads
        self.download_timeout = download_timeout
        self.weights_path: Path | str | None = None
        self._model = None
        self._torch_threads = 0

    def describe(self) -> str:
        src = self.weights_path or self.weights
        return f"{self.name}: weights {src}, {len(self.classes) if self.classes else 'all'} product classes"

    def _load(self) -> None:
        prepare_ultralytics(self.cache_dir / "ultralytics", self.threads)
        with contextlib.redirect_stdout(sys.stderr):  # first import announces its settings file on stdout
            path = self._resolve_weights()
        try:
            import torch

            # Taken before ultralytics runs any code that lowers it (see _detect).
            self._torch_threads = self.threads if self.threads > 0 else torch.get_num_threads()
            with contextlib.redirect_stdout(sys.stderr):
                from ultralytics import YOLO

            with contextlib.redirect_stdout(sys.stderr):  # its banner goes to stdout, which may carry JSON
                model = YOLO(str(path), task="detect")
            self._restore_threads()
        except Exception as exc:
            raise ModelLoadError(f"YOLO weights {path} do not load: {exc}") from exc
        self._model = model
        self.weights_path = path

    def _resolve_weights(self) -> Path | str:
        spec = self.weights
        path = Path(spec).expanduser()
        if spec.endswith((".yaml", ".yml")):
            return spec  # an architecture without weights: random init (tests, training from scratch)
        if path.is_file():
            return path
        if len(path.parts) > 1 or path.suffix not in (".pt", ".onnx"):
            raise ModelLoadError(f"YOLO weights file not found: {path}")
        cached = self.cache_dir / "yolo" / path.name
        if cached.is_file():
            return cached
        from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES

        if path.name not in GITHUB_ASSETS_NAMES:
            raise ModelLoadError(
                f"YOLO weights {spec!r}: no such local file, and not an ultralytics asset name "
                "(e.g. yolo11n.pt); give a path to a .pt or .onnx file"
            )
        return self._download(path.name, cached)

    def _download(self, name: str, target: Path) -> Path:
        hint = (
            f"download {name} on a connected machine and set VITRINE_YOLO_WEIGHTS to its path (or copy it to {target})"
        )
        problem = _check_reachable(HUB_HOST)
        if problem:
            raise ModelLoadError(
                f"cannot download YOLO weights {name}: {HUB_HOST} is unreachable "
                f"({problem}); this machine looks offline. {hint}"
            )
        outcome: dict = {}

        def run() -> None:
            try:
                outcome["path"] = _hub_download(name, target)
            except BaseException as exc:  # reported to the loading thread below
                outcome["error"] = exc

        log.info("downloading YOLO weights %s to %s", name, target)
        worker = threading.Thread(target=run, name=f"yolo-download-{name}", daemon=True)
        worker.start()
        worker.join(self.download_timeout)
        if worker.is_alive():  # the daemon thread is abandoned; the caller gets an answer now
            raise ModelLoadError(
                f"download of YOLO weights {name} did not finish in {self.download_timeout:.0f}s; {hint}"
            )
        if "error" in outcome or not target.is_file():
            raise ModelLoadError(f"download of YOLO weights {name} failed: {outcome.get('error')}; {hint}")
        return target

    def _detect(self, images: list[Image.Image]) -> list[list[Detection]]:
        results = self._model.predict(
            images, imgsz=self.imgsz, conf=self.conf, iou=self.iou, max_det=self.max_det, device="cpu", verbose=False
        )
        self._restore_threads()
        out = []
        for image, result in zip(images, results):
            dets = [whole_image_detection(image)] if self.trim_whole else []
            boxes = result.boxes
            for xyxy, score, cls in zip(boxes.xyxy.tolist(), boxes.conf.tolist(), boxes.cls.tolist()):
                det = self._to_detection(result.names[int(cls)], xyxy, score)
                if det is not None:
                    dets.append(det)
            out.append(dets)
        return out

    def _restore_threads(self) -> None:
        # ultralytics' select_device sets torch's process-wide thread count to cores - 1 ("for
        # training"): one thread on a 2-core machine, for every model in the process. Undo it.
        import torch

        if torch.get_num_threads() != self._torch_threads:
            torch.set_num_threads(self._torch_threads)

    def _to_detection(self, raw: str, xyxy: list[float], score: float) -> Detection | None:
        box = (float(xyxy[0]), float(xyxy[1]), float(xyxy[2]), float(xyxy[3]))
        if raw in self.context_classes:
            return Detection(box, raw, float(score), "context")
        if self.classes is not None and raw not in self.classes:
            return None
        return Detection(box, self.label_map.get(raw, raw), float(score), "item")


def _hub_download(name: str, target: Path) -> Path:
    """Fetch an ultralytics release asset to `target` (the only network call of this module)."""
    from ultralytics.utils.downloads import attempt_download_asset

    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(attempt_download_asset(str(target)))


def _check_reachable(host: str, timeout: float = 5.0) -> str | None:
    """None when a TCP connection to host:443 opens within timeout, else the reason."""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return None
    except OSError as exc:
        return str(exc) or type(exc).__name__


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    return (
        Path(spec.submodule_search_locations[0]) if spec and spec.submodule_search_locations else Path("/nonexistent")
    )
