"""The YOLO student: an ultralytics detector trained (or fine-tuned) on teacher labels, evaluated, exported.

A student learns a retailer's classes from a label set (`training.labelsets`) that a teacher wrote.
Adding a class fine-tunes the previous student on a dataset holding its old classes plus the new
one; ultralytics rebuilds the detection head for the new class count, copies every tensor whose
shape still fits (backbone, neck, box branch) and, by class name (`cls_remap`), the old classes'
rows of the classification layer, so the old classes start where they were. `train_student`
checks that and reports it (`StudentResult.transfer`).

ultralytics is imported inside the functions, after `vision.yolo.prepare_ultralytics` pointed it at
an offline, project-owned config dir; whatever it prints goes to stderr, because the CLI's
``--json`` output owns stdout. Its device selection lowers torch's process-wide thread count to
cores - 1 (one thread on two cores): training keeps that unless `StudentConfig.threads` says otherwise,
and every function here puts the caller's count back afterwards.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image

from vision.detector import Detector
from vision.yolo import YoloDetector, prepare_ultralytics

log = logging.getLogger(__name__)

STUDENT_WEIGHTS = "student.pt"
STUDENT_CARD = "student.json"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# onnxruntime 1.32 runs opsets up to 23; 17 is what ultralytics' own ONNX runtime paths are tested on.
ONNX_OPSET = 17

Progress = Callable[[int, int, float], None]


class StudentError(RuntimeError):
    """A student that cannot be trained, evaluated or exported as asked; the message says why."""


@dataclass
class StudentConfig:
    """One student training run: architecture or base weights, schedule, device and augmentation."""

    architecture: str = "yolo11n.yaml"  # random init: no pretrained weights are reachable offline
    base: Path | None = None  # a previous student .pt to fine-tune; its classes must lead the new names
    epochs: int = 30
    imgsz: int = 320
    batch: int = 16
    seed: int = 0
    device: str = "auto"  # "auto": cuda when torch sees one, else cpu; or "cpu", "0", "cuda:0"
    workers: int | None = None  # data loader processes; None: 0 on CPU (the cores train), 4 on a GPU
    patience: int = 20  # epochs without a better val fitness before stopping early
    # torch threads on CPU; 0: ultralytics' choice, cores - 1. On a shared 2-core machine one thread
    # trained 3-5x faster than two (OpenMP threads waiting on each other under load), so it stays the default.
    threads: int = 0
    # Composite scenes already vary scale, place and neighbours: mosaic helps small objects and is
    # cheap; mixup blends two scenes into ghosts that a catalog scene never shows.
    mosaic: float = 1.0
    mixup: float = 0.0
    close_mosaic: int = 5  # last epochs without mosaic, so the final ones see whole scenes
    fliplr: float = 0.5
    scale: float = 0.5
    degrees: float = 0.0  # scenes are composed already rotated; rotating boxes again loosens them
    hsv_h: float = 0.015
    cache: bool = False  # decoded images in RAM: faster epochs for small sets

    def resolved_device(self) -> str:
        """The device ultralytics gets: 'cpu' or a cuda index such as '0'."""
        device = str(self.device).strip().lower()
        if device in ("", "auto"):
            import torch

            return "0" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda"):
            return device.partition(":")[2] or "0"
        return device

    def to_dict(self) -> dict:
        """Plain JSON-able form (paths as strings)."""
        out = asdict(self)
        out["base"] = None if self.base is None else str(self.base)
        return out


@dataclass
class StudentResult:
    """What a training run produced: the weights, their class names, time, device and held-out metrics."""

    weights: Path
    names: list[str]
    seconds: float
    device: str
    epochs_run: int
    config: dict
    metrics: dict[str, float]  # the best checkpoint on the val split: map50, map50_95, precision, recall
    transfer: dict = field(default_factory=dict)  # fine-tuning only: base tensors kept / total, old names

    def to_dict(self) -> dict:
        """Plain JSON-able form (the model card)."""
        out = asdict(self)
        out["weights"] = str(self.weights)
        return out


def dataset_names(data_yaml: Path) -> list[str]:
    """The class names of an ultralytics data.yaml, in id order; StudentError when it is not a usable dataset."""
    spec = _read_data_yaml(data_yaml)
    return spec["names"]


def train_student(
    data_yaml: Path,
    out_dir: Path,
    config: StudentConfig,
    progress: Progress | None = None,
    *,
    cache_dir: Path | None = None,
) -> StudentResult:
    """Train (or fine-tune from config.base) a YOLO student on data_yaml; weights at out_dir/student.pt.

    `progress(epoch, epochs, seconds)` is called once per finished epoch (1-based). ultralytics keeps its
    config under cache_dir/ultralytics (as YoloDetector does); its run goes to out_dir/runs/train.
    """
    data_yaml, out_dir = Path(data_yaml).resolve(), Path(out_dir).resolve()
    spec = _read_data_yaml(data_yaml)
    names = spec["names"]
    for split in ("train", "val"):
        if not spec["counts"].get(split):
            raise StudentError(f"{data_yaml}: the {split} split has no images; a student needs train and val images")
    if config.epochs < 1 or config.batch < 1 or config.imgsz < 32:
        raise StudentError(
            f"epochs and batch must be >= 1 and imgsz >= 32, got {config.epochs}, {config.batch}, {config.imgsz}"
        )
    base = _check_base(config.base, names, cache_dir) if config.base else None
    device = config.resolved_device()
    out_dir.mkdir(parents=True, exist_ok=True)
    state: dict = {"reported": 0, "transfer": {}}
    started = time.monotonic()

    def keep_threads(trainer) -> None:
        # select_device (trainer and validator) sets cores - 1; an explicit choice wins over it.
        if device == "cpu" and config.threads > 0:
            _set_threads(config.threads)

    def on_epoch(trainer) -> None:
        epoch = trainer.epoch + 1
        # final_eval fires on_fit_epoch_end once more (epoch + 1, after the last): report each epoch once.
        if epoch <= state["reported"] or state.get("finished"):
            return
        state["reported"] = epoch
        state["finished"] = bool(trainer.stop)
        if progress is not None:
            progress(epoch, trainer.epochs, time.monotonic() - started)

    def check_transfer(trainer) -> None:
        if base is not None:
            state["transfer"] = _transfer_report(base["state"], trainer.model.state_dict(), base["names"])

    with _ultralytics(cache_dir, config.threads):
        from ultralytics import YOLO

        model = YOLO(str(config.base) if config.base else config.architecture, task="detect")
        model.add_callback("on_pretrain_routine_start", keep_threads)
        model.add_callback("on_pretrain_routine_end", check_transfer)
        model.add_callback("on_train_epoch_start", keep_threads)
        model.add_callback("on_fit_epoch_end", on_epoch)
        try:
            _fit(model, data_yaml, out_dir, config, device)
        except (OSError, RuntimeError, ValueError, KeyError) as exc:  # unreadable data, out of memory, bad labels
            raise StudentError(f"training on {data_yaml} failed: {type(exc).__name__}: {exc}") from exc
        trainer = model.trainer
        best = Path(trainer.best if Path(trainer.best).exists() else trainer.last)
        metrics = _train_metrics(trainer.metrics)
    weights = out_dir / STUDENT_WEIGHTS
    shutil.copyfile(best, weights)
    result = StudentResult(
        weights=weights,
        names=_model_names(model),
        seconds=round(time.monotonic() - started, 2),
        device=device,
        epochs_run=state["reported"],
        config=config.to_dict(),
        metrics=metrics,
        transfer=state["transfer"],
    )
    if result.names != names:  # ultralytics names the model after the dataset: anything else is a bug
        raise StudentError(f"trained student names {result.names} differ from the dataset's {names}")
    (out_dir / STUDENT_CARD).write_text(json.dumps(result.to_dict(), indent=2, sort_keys=True) + "\n")
    return result


def evaluate_student(
    weights: Path,
    data_yaml: Path,
    split: str = "test",
    imgsz: int = 320,
    conf: float = 0.001,
    *,
    batch: int = 16,
    device: str = "auto",
    cache_dir: Path | None = None,
) -> dict:
    """mAP50, mAP50-95 and per-class AP50 of a student on one split (ultralytics val; writes only to a temp dir).

    Returns {"map50", "map50_95", "per_class": {name: {"ap50", "instances"}}, "images", "seconds"}; a class
    with no instances in the split has ap50 None.
    """
    weights, data_yaml = Path(weights).resolve(), Path(data_yaml).resolve()
    if not weights.is_file():
        raise StudentError(f"student weights not found: {weights}")
    spec = _read_data_yaml(data_yaml)
    if not spec["counts"].get(split):
        have = sorted(s for s, n in spec["counts"].items() if n)
        raise StudentError(f"{data_yaml}: no images in split {split!r}; splits with images: {have}")
    run_device = StudentConfig(device=device).resolved_device()
    threads = os.cpu_count() or 1
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="vitrine-val-") as tmp,
        _ultralytics(cache_dir, threads if run_device == "cpu" else 0),
    ):
        from ultralytics import YOLO

        model = _load_yolo(YOLO, weights)
        names = _model_names(model)
        if names != spec["names"]:
            raise StudentError(
                f"the student's classes {names} are not the dataset's {spec['names']}; "
                "evaluate on a set with the same names"
            )
        metrics = model.val(
            data=str(data_yaml),
            split=split,
            imgsz=imgsz,
            conf=conf,
            batch=batch,
            device=run_device,
            workers=0,
            plots=False,
            save_json=False,
            project=tmp,
            name="val",
            exist_ok=True,
            verbose=False,
        )
        box = metrics.box
        ap50 = {int(c): float(v) for c, v in zip(box.ap_class_index, box.ap50)}
        instances = [int(n) for n in metrics.nt_per_class] if metrics.nt_per_class is not None else []
    per_class = {
        name: {
            "ap50": ap50.get(i, 0.0) if i < len(instances) and instances[i] else None,
            "instances": instances[i] if i < len(instances) else 0,
        }
        for i, name in enumerate(names)
    }
    return {
        "map50": float(box.map50),
        "map50_95": float(box.map),
        "per_class": per_class,
        "images": spec["counts"][split],
        "seconds": round(time.monotonic() - started, 2),
    }


def export_onnx(weights: Path, imgsz: int = 320, *, opset: int = ONNX_OPSET, cache_dir: Path | None = None) -> Path:
    """Export a student to ONNX beside its .pt (static batch 1, imgsz x imgsz); checked to run in onnxruntime."""
    weights = Path(weights).resolve()
    if not weights.is_file():
        raise StudentError(f"student weights not found: {weights}")
    import importlib.util

    simplify = importlib.util.find_spec("onnxslim") is not None  # else ultralytics tries to pip-install it
    with _ultralytics(cache_dir, os.cpu_count() or 1):
        from ultralytics import YOLO

        model = _load_yolo(YOLO, weights)
        path = Path(
            model.export(format="onnx", imgsz=imgsz, opset=opset, simplify=simplify, dynamic=False, device="cpu")
        )
    _check_onnx_runs(path, imgsz)
    return path


def inference_speed(
    weights_or_detector: Path | str | Detector,
    images: Sequence[Image.Image],
    imgsz: int = 320,
    repeats: int = 3,
    *,
    threads: int = 0,
    cache_dir: Path | None = None,
) -> float:
    """Images per second, one image per call, after one warm-up call; torch on `threads` (0: every core).

    Takes a detector (e.g. WholeImageDetector) or student weights (.pt or .onnx), served through YoloDetector.
    """
    if not images:
        raise StudentError("inference_speed needs at least one image")
    threads = threads if threads > 0 else os.cpu_count() or 1
    if isinstance(weights_or_detector, Detector):
        detector = weights_or_detector
    else:
        detector = student_detector(
            weights_or_detector, cache_dir=cache_dir or _default_cache(), imgsz=imgsz, threads=threads
        )
    import torch

    previous = torch.get_num_threads()
    try:
        _set_threads(threads)
        with contextlib.redirect_stdout(sys.stderr):
            detector.detect([images[0]])  # load + warm-up
            started = time.perf_counter()
            for _ in range(max(1, repeats)):
                for image in images:
                    detector.detect([image])
            seconds = time.perf_counter() - started
    finally:
        _set_threads(previous)
    return max(1, repeats) * len(images) / seconds


def student_detector(
    weights: Path | str, *, cache_dir: Path, imgsz: int = 320, conf: float = 0.25, threads: int = 0
) -> YoloDetector:
    """A student served as a vision detector: every class is an item, labelled with the student's own name."""
    return YoloDetector(
        cache_dir=cache_dir,
        weights=weights,
        classes=None,  # no COCO allow-list: the student knows only the retailer's classes
        label_map={},  # identity labels
        context_classes=(),  # a student class named "person" is a product class like any other
        conf=conf,
        imgsz=imgsz,
        trim_whole=False,
        threads=threads,
    )


# -- helpers ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _ultralytics(cache_dir: Path | None, threads: int) -> Iterator[None]:
    """Offline ultralytics with its stdout on stderr; torch's thread count restored on the way out."""
    prepare_ultralytics((Path(cache_dir) if cache_dir else _default_cache()) / "ultralytics", threads)
    import torch

    previous = torch.get_num_threads()
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        _set_threads(previous)


def _default_cache() -> Path:
    # The process's ultralytics config is fixed by its first user (YOLO_CONFIG_DIR): reuse it when set.
    configured = os.environ.get("YOLO_CONFIG_DIR")
    return Path(configured).parent if configured else Path(tempfile.gettempdir()) / "vitrine-models"


def _set_threads(n: int) -> None:
    import torch

    if n > 0 and torch.get_num_threads() != n:
        torch.set_num_threads(n)


def _fit(model, data_yaml: Path, out_dir: Path, config: StudentConfig, device: str) -> None:
    """ultralytics training with the run under out_dir/runs/train and no plots."""
    model.train(
        data=str(data_yaml),
        project=str(out_dir / "runs"),
        name="train",
        exist_ok=True,
        epochs=config.epochs,
        imgsz=config.imgsz,
        batch=config.batch,
        seed=config.seed,
        deterministic=True,
        device=device,
        workers=_workers(config, device),
        patience=config.patience,
        mosaic=config.mosaic,
        mixup=config.mixup,
        close_mosaic=min(config.close_mosaic, config.epochs),
        fliplr=config.fliplr,
        scale=config.scale,
        degrees=config.degrees,
        hsv_h=config.hsv_h,
        cache="ram" if config.cache else False,
        amp=device != "cpu",
        plots=False,
        val=True,
        verbose=False,
    )


def _workers(config: StudentConfig, device: str) -> int:
    if config.workers is not None:
        return max(0, config.workers)
    return 0 if device == "cpu" else min(4, os.cpu_count() or 1)


def _load_yolo(yolo_cls, weights: Path):
    try:
        return yolo_cls(str(weights), task="detect")
    except Exception as exc:  # a corrupt or foreign file: say which and why
        raise StudentError(f"student weights {weights} do not load: {exc}") from exc


def _model_names(model) -> list[str]:
    names = model.names
    return [str(names[i]) for i in range(len(names))] if isinstance(names, dict) else [str(n) for n in names]


def _read_data_yaml(data_yaml: Path) -> dict:
    """names, the resolved split dirs and their image counts of an ultralytics data.yaml."""
    import yaml

    data_yaml = Path(data_yaml)
    try:
        spec = yaml.safe_load(data_yaml.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise StudentError(f"dataset file {data_yaml} is not readable YAML: {exc}") from None
    if not isinstance(spec, dict):
        raise StudentError(f"dataset file {data_yaml} is not a mapping with path, splits and names")
    raw = spec.get("names")
    if isinstance(raw, dict):
        try:
            names = [str(raw[i]) for i in range(len(raw))]
        except KeyError:
            raise StudentError(f"{data_yaml}: class ids in names must be 0..n-1, got {sorted(raw)}") from None
    elif isinstance(raw, list):
        names = [str(n) for n in raw]
    else:
        raise StudentError(f"{data_yaml} has no class names")
    if not names or len(set(names)) != len(names):
        raise StudentError(f"{data_yaml}: class names must be non-empty and distinct, got {names}")
    root = Path(spec.get("path") or data_yaml.parent)
    if not root.is_absolute():
        root = data_yaml.parent / root
    counts = {}
    for split in ("train", "val", "test"):
        if spec.get(split):
            counts[split] = sum(_count_images(root / str(entry)) for entry in _as_list(spec[split]))
    return {"names": names, "root": root, "counts": counts}


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _count_images(source: Path) -> int:
    """Images in a split's folder, or lines of a split's .txt file list (both are ultralytics layouts)."""
    if source.is_dir():
        return sum(1 for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if source.is_file() and source.suffix == ".txt":
        return sum(1 for line in source.read_text().splitlines() if line.strip())
    return 0


def _check_base(base: Path, names: list[str], cache_dir: Path | None) -> dict:
    """The base student's names and weights; its classes must lead the new dataset's names, in order."""
    base = Path(base).resolve()
    if not base.is_file():
        raise StudentError(f"base student not found: {base}")
    with _ultralytics(cache_dir, 0):
        from ultralytics import YOLO

        model = _load_yolo(YOLO, base)
        old = _model_names(model)
        state = {k: v.detach().clone() for k, v in model.model.state_dict().items()}
    if names[: len(old)] != old:
        raise StudentError(
            f"the dataset's classes {names} must start with the base student's {old}, in that order "
            "(old classes are kept: merge their label sets first, old names first)"
        )
    return {"names": old, "state": state}


def _transfer_report(base_state: dict, new_state: dict, old_names: list[str]) -> dict:
    """How many of the base's tensors start the fine-tune unchanged (class-sized ones: the old classes' rows)."""
    import torch

    n_old, kept, missing = len(old_names), 0, []
    for key, old in base_state.items():
        new = new_state.get(key)
        if new is None:
            missing.append(key)
            continue
        new = new.detach().to(old.device, old.dtype)
        if new.shape == old.shape:
            same = torch.equal(new, old)
        else:  # the classification layer grew by the new classes: its first rows are the old classes
            same = old.shape[0] == n_old and new.shape[1:] == old.shape[1:] and torch.equal(new[:n_old], old)
        if same:
            kept += 1
        else:
            missing.append(key)
    if missing:
        log.warning("fine-tuning did not carry %d base tensors over, e.g. %s", len(missing), missing[:3])
    return {"kept": kept, "total": len(base_state), "old_names": list(old_names), "not_kept": missing[:20]}


def _train_metrics(raw: dict | None) -> dict[str, float]:
    raw = raw or {}
    keys = {
        "map50": "metrics/mAP50(B)",
        "map50_95": "metrics/mAP50-95(B)",
        "precision": "metrics/precision(B)",
        "recall": "metrics/recall(B)",
    }
    return {k: round(float(raw[v]), 4) for k, v in keys.items() if v in raw}


def _check_onnx_runs(path: Path, imgsz: int) -> None:
    import numpy as np
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: np.zeros((1, 3, imgsz, imgsz), np.float32)}
        session.run(None, feed)
    except Exception as exc:
        raise StudentError(f"exported graph {path} does not run in onnxruntime {ort.__version__}: {exc}") from exc
