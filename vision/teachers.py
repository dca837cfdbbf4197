"""Teachers: label boxes of one class in images, for training a student detector on a retailer's classes.

A teacher answers "where is the <label> in each of these images?" given a text prompt. Two kinds:

- `CatalogTeacher` ("catalog"): the product photo itself. One product on a transparent or plain
  background is cut out (vision.cutout), which gives its exact box; works offline, loads nothing.
- `OpenVocabTeacher` ("owlvit", "grounding-dino"): a zero-shot detector from `transformers`, loaded
  from a local directory (save_pretrained layout) or its hub id. Offline it fails fast with
  TeacherUnavailable saying how to provide the weights; it never hangs on a download.

`create_teacher(name, cache_dir=...)` builds one by name, like vision.detector.create_detector.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from vision.cutout import REASONS, Cutout, NoCutout, cut_out
from vision.detector import Detection
from vision.model import LazyModel, ModelLoadError, UnknownBackend
from vision.yolo import _check_reachable

log = logging.getLogger(__name__)

__all__ = [
    "REASONS",
    "TEACHERS",
    "CatalogTeacher",
    "Cutout",
    "NoCutout",
    "OpenVocabTeacher",
    "Teacher",
    "TeacherUnavailable",
    "create_teacher",
    "cut_out",
]

# name -> "module:Class", imported on demand like the detectors' registry.
TEACHERS: dict[str, str] = {
    "catalog": "vision.teachers:CatalogTeacher",
    "owlvit": "vision.teachers:OwlVitTeacher",
    "grounding-dino": "vision.teachers:GroundingDinoTeacher",
}
HUB_HOST = "huggingface.co"


class TeacherUnavailable(ModelLoadError):
    """A teacher's model cannot be loaded here (not installed, not downloadable offline); the message says how."""


class Teacher(LazyModel):
    """Base class: `label(images, prompt, label)` loads on first use, then returns one box list per image."""

    name: str = ""
    model: str = ""  # where the teacher's knowledge comes from (hub id, directory, "cut-out"), for label cards

    def label(self, images: Sequence[Image.Image], prompt: str, label: str) -> list[list[Detection]]:
        """Boxes of `label` found with `prompt` in each image (kind "item", score 0-1), in input order."""
        if not label or not label.strip():
            raise ValueError("label must be a non-empty class name")
        self.load()
        if len(images) == 0:
            return []
        return self._label(list(images), prompt, label)

    def _label(self, images: list[Image.Image], prompt: str, label: str) -> list[list[Detection]]:
        raise NotImplementedError


class CatalogTeacher(Teacher):
    """The product photo as its own label: the cut-out's box, score 1.0; nothing when it cannot be cut out.

    The prompt is ignored: a catalog photo shows one product of its category, so the box is the
    product whatever the words. Photos that cannot be cut out get [] (see `cut_out` for the reason).
    """

    name = "catalog"
    model = "cut-out"

    def __init__(self, *, cache_dir: Path | None = None, tolerance: int = 24):
        super().__init__()
        self.tolerance = tolerance

    def describe(self) -> str:
        return f"{self.name} (no weights: alpha channel or plain-background cut-out, tolerance {self.tolerance})"

    def _load(self) -> None:
        pass  # nothing to load

    def _label(self, images: list[Image.Image], prompt: str, label: str) -> list[list[Detection]]:
        out: list[list[Detection]] = []
        for image in images:
            try:
                cut = cut_out(image, tolerance=self.tolerance)
            except NoCutout as exc:
                log.debug("catalog teacher: no box (%s)", exc)
                out.append([])
                continue
            out.append([Detection(box=cut.box, label=label, score=1.0, kind="item")])
        return out


@dataclass(frozen=True)
class _Family:
    default_model: str
    processor: str  # transformers class names, imported when the teacher loads
    detector: str


_FAMILIES: dict[str, _Family] = {
    "owlvit": _Family("google/owlvit-base-patch32", "OwlViTProcessor", "OwlViTForObjectDetection"),
    "grounding-dino": _Family(
        "IDEA-Research/grounding-dino-tiny", "AutoProcessor", "AutoModelForZeroShotObjectDetection"
    ),
}


class OpenVocabTeacher(Teacher):
    """A zero-shot text-prompted detector from transformers (OWL-ViT or GroundingDINO).

    model: a local directory written by save_pretrained (processor + model), or a hub id (default:
    the family's base model). A hub id is looked up in cache_dir/huggingface first; it is downloaded
    only when huggingface.co answers, within download_timeout seconds.
    """

    def __init__(
        self,
        kind: str = "owlvit",
        *,
        cache_dir: Path | None = None,
        model: str | Path | None = None,
        threshold: float = 0.1,
        text_threshold: float = 0.25,
        batch_size: int = 4,
        max_det: int = 50,
        download_timeout: float = 600.0,
    ):
        super().__init__()
        if kind not in _FAMILIES:
            raise UnknownBackend(f"unknown open-vocabulary teacher {kind!r}; choose one of {', '.join(_FAMILIES)}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in 0-1, got {threshold}")
        self.name = kind
        self.family = _FAMILIES[kind]
        self.model = str(model) if model is not None else self.family.default_model
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.threshold, self.text_threshold = threshold, text_threshold
        self.batch_size, self.max_det = max(1, batch_size), max_det
        self.download_timeout = download_timeout
        self.source: Path | None = None  # the directory the weights were loaded from
        self._processor = None
        self._detector = None
        self._max_text = 16

    def describe(self) -> str:
        return f"{self.name}: {self.source or self.model}, threshold {self.threshold}"

    def _load(self) -> None:
        try:
            import torch  # noqa: F401  (transformers' models need it; a clear error beats theirs)
            import transformers
        except ImportError as exc:
            raise TeacherUnavailable(
                f"the {self.name} teacher needs transformers ({exc}); install it with pip install 'vitrine[teachers]'"
            ) from None
        directory = self._resolve()
        try:
            processor = getattr(transformers, self.family.processor).from_pretrained(directory, local_files_only=True)
            detector = getattr(transformers, self.family.detector).from_pretrained(directory, local_files_only=True)
        except Exception as exc:
            raise TeacherUnavailable(
                f"{self.name} teacher: {directory} does not load as a {self.family.detector} with its processor "
                f"({type(exc).__name__}: {exc}); {self._hint()}"
            ) from exc
        detector.eval()
        self._processor, self._detector, self.source = processor, detector, directory
        config = detector.config
        # Prompts longer than the text tower's positions are truncated rather than crashing its forward.
        self._max_text = getattr(config, "max_text_len", None) or config.text_config.max_position_embeddings

    def _hint(self) -> str:
        return (
            f"download the model on a connected machine (transformers {self.family.processor} and "
            f"{self.family.detector} .from_pretrained({self.family.default_model!r}).save_pretrained(DIR) for both) "
            "and pass that folder as --teacher-model DIR"
        )

    def _resolve(self) -> Path:
        """The local directory holding the processor and weights: given, cached, or downloaded now."""
        spec = self.model
        path = Path(spec).expanduser()
        if path.is_dir():
            return path
        if path.exists() or spec.startswith(("/", ".", "~")) or spec.count("/") != 1:
            raise TeacherUnavailable(f"{self.name} teacher: {spec!r} is neither a model directory nor a hub id")
        cached = self._snapshot(spec, local_only=True)
        if cached is not None:
            return cached
        problem = _check_reachable(HUB_HOST)
        if problem:
            raise TeacherUnavailable(
                f"{self.name} teacher: model {spec!r} is not cached here and {HUB_HOST} is unreachable "
                f"({problem}); this machine looks offline. {self._hint()}"
            )
        return self._download(spec)

    def _hub_cache(self) -> str | None:
        return str(self.cache_dir / "huggingface") if self.cache_dir is not None else None

    def _snapshot(self, repo_id: str, *, local_only: bool) -> Path | None:
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(repo_id, cache_dir=self._hub_cache(), local_files_only=local_only))
        except Exception as exc:  # not cached (local_only) or a failed download: the caller decides
            if not local_only:
                raise
            log.debug("%s not in the hub cache: %s", repo_id, exc)
            return None

    def _download(self, repo_id: str) -> Path:
        outcome: dict = {}

        def run() -> None:
            try:
                outcome["path"] = self._snapshot(repo_id, local_only=False)
            except BaseException as exc:  # reported to the loading thread below
                outcome["error"] = exc

        log.info("downloading teacher model %s", repo_id)
        worker = threading.Thread(target=run, name=f"teacher-download-{self.name}", daemon=True)
        worker.start()
        worker.join(self.download_timeout)
        if worker.is_alive():  # the daemon thread is abandoned; the caller gets an answer now
            raise TeacherUnavailable(
                f"download of {repo_id} did not finish in {self.download_timeout:.0f}s; {self._hint()}"
            )
        if "error" in outcome:
            raise TeacherUnavailable(f"download of {repo_id} failed: {outcome['error']}; {self._hint()}")
        return outcome["path"]

    def _label(self, images: list[Image.Image], prompt: str, label: str) -> list[list[Detection]]:
        import torch

        text = _prompt_text(self.name, prompt)
        out: list[list[Detection]] = []
        for start in range(0, len(images), self.batch_size):
            batch = [im.convert("RGB") for im in images[start : start + self.batch_size]]
            texts = [[text] for _ in batch] if self.name == "owlvit" else [text for _ in batch]
            inputs = self._processor(
                text=texts, images=batch, return_tensors="pt", padding=True, truncation=True, max_length=self._max_text
            )
            with torch.inference_mode():
                outputs = self._detector(**inputs)
            sizes = [(im.height, im.width) for im in batch]
            for image, result in zip(batch, self._post_process(outputs, inputs, sizes)):
                out.append(self._to_detections(image, result, label))
        return out

    def _post_process(self, outputs, inputs, sizes: list[tuple[int, int]]) -> list[dict]:
        post = getattr(self._processor, "post_process_grounded_object_detection", None)
        if post is None:  # older OWL-ViT processors
            return self._processor.post_process_object_detection(outputs, threshold=self.threshold, target_sizes=sizes)
        params = inspect.signature(post).parameters
        kwargs: dict = {"target_sizes": sizes}
        # transformers renamed GroundingDINO's box_threshold to threshold (4.51); accept both.
        kwargs["threshold" if "threshold" in params else "box_threshold"] = self.threshold
        if "text_threshold" in params:
            kwargs["text_threshold"] = self.text_threshold
        if "input_ids" in params:
            kwargs["input_ids"] = inputs["input_ids"]
        return post(outputs, **kwargs)

    def _to_detections(self, image: Image.Image, result: dict, label: str) -> list[Detection]:
        dets = []
        for score, box in zip(result["scores"].tolist(), result["boxes"].tolist()):
            x0, y0 = max(0.0, min(box[0], box[2])), max(0.0, min(box[1], box[3]))
            x1, y1 = min(float(image.width), max(box[0], box[2])), min(float(image.height), max(box[1], box[3]))
            if x1 - x0 >= 1 and y1 - y0 >= 1:
                score = min(1.0, max(0.0, float(score)))
                dets.append(Detection(box=(x0, y0, x1, y1), label=label, score=score, kind="item"))
        dets.sort(key=lambda d: d.score, reverse=True)
        return dets[: self.max_det]


class OwlVitTeacher(OpenVocabTeacher):
    """OWL-ViT (default google/owlvit-base-patch32)."""

    def __init__(self, **options):
        super().__init__("owlvit", **options)


class GroundingDinoTeacher(OpenVocabTeacher):
    """GroundingDINO (default IDEA-Research/grounding-dino-tiny)."""

    def __init__(self, **options):
        super().__init__("grounding-dino", **options)


def _prompt_text(kind: str, prompt: str) -> str:
    text = " ".join(prompt.split())
    if not text:
        raise ValueError("prompt must be non-empty text")
    if kind == "grounding-dino":
        # GroundingDINO expects lower-case phrases, each ended by a full stop.
        text = text.lower()
        return text if text.endswith(".") else text + "."
    return text


def create_teacher(name: str, *, cache_dir: Path | None = None, **options) -> Teacher:
    """Build (without loading) the teacher registered under `name`."""
    target = TEACHERS.get(name)
    if target is None:
        raise UnknownBackend(f"unknown teacher {name!r}; choose one of {', '.join(sorted(TEACHERS))}")
    module_name, cls_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(cache_dir=cache_dir, **options)
