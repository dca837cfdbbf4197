"""Trained models as files: one self-contained, content-addressed artefact per model, and its embedder.

An artefact is a zip file (`.vtm`) holding `card.json` (the model card: method, data, hyperparameters,
held-out metrics, training time, machine) and the weights, in one of two forms:

- `head.npz`: a small MLP applied to the unit vectors of a pinned pretrained backbone (the card names
  the backbone's model key; loading refuses any other). It maps *stored* backbone vectors too, so a
  catalog already embedded with the backbone needs no CNN pass to get the new vectors.
- `model.onnx`: the whole image tower (a fine-tuned backbone with its head, or an autoencoder's
  encoder), run with onnxruntime.

The file is written with fixed zip timestamps, so identical weights and card give identical bytes,
and its key is `<name>@<sha256 of the file, 12 hex>`: the vectors it makes are stored under that key.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from vision.embedder import Embedder, create_embedder, imagenet_preprocess, l2_normalize
from vision.model import ModelLoadError
from vision.onnx_export import OnnxRunner

FORMAT = "vitrine-model/1"
SUFFIX = ".vtm"
_ZIP_DATE = (2020, 1, 1, 0, 0, 0)
_HEAD_KEYS = ("w1", "b1", "w2", "b2")  # optional: w3, b3 (a code layer whose signs are the binary code)
PREPROCESSING = ("imagenet", "unit")  # unit: RGB scaled to [0, 1] (the autoencoder's input)


def write_artefact(
    directory: Path, card: dict, *, head: dict[str, np.ndarray] | None = None, onnx: bytes = b""
) -> Path:
    """Write card + weights as `<directory>/<key>.vtm` (key = name@sha12 of the bytes); returns the path.

    Exactly one of `head` (arrays w1 b1 w2 b2 [w3 b3], float32) or `onnx` (a serialized graph) is given.
    """
    if (head is None) == (not onnx):
        raise ValueError("an artefact holds either a head or an ONNX graph")
    card = {**card, "format": FORMAT, "weights": "head.npz" if head is not None else "model.onnx"}
    _check_card(card)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        _add(zf, "card.json", json.dumps(card, indent=2, sort_keys=True).encode())
        if head is not None:
            missing = [k for k in _HEAD_KEYS if k not in head]
            if missing:
                raise ValueError(f"head weights lack {missing}")
            arrays = io.BytesIO()
            np.savez(arrays, **{k: np.asarray(v, dtype=np.float32) for k, v in sorted(head.items())})
            _add(zf, "head.npz", arrays.getvalue())
        else:
            _add(zf, "model.onnx", onnx)
    data = buffer.getvalue()
    key = f"{card['name']}@{hashlib.sha256(data).hexdigest()[:12]}"
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{key}{SUFFIX}"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)  # readers never see half a file, and two writers never share a temp file
    return path


def artefact_key(path: Path) -> str:
    """The model key of an artefact file: `<card name>@<sha256[:12] of its bytes>`."""
    data = _read_bytes(path)
    return f"{_card_of(data, path)['name']}@{hashlib.sha256(data).hexdigest()[:12]}"


def read_card(path: Path) -> dict:
    """The model card of an artefact, with its `key` and `path`; ModelLoadError if the file is not one."""
    data = _read_bytes(path)
    card = _card_of(data, path)
    return {**card, "key": f"{card['name']}@{hashlib.sha256(data).hexdigest()[:12]}", "path": str(path)}


class TrainedEmbedder(Embedder):
    """Embeds with a trained artefact: backbone + head, or a whole ONNX tower."""

    name = "trained"

    def __init__(self, *, artefact: str | Path, **kwargs):
        super().__init__(**kwargs)
        if not artefact:
            raise ModelLoadError("the trained embedder needs an artefact path (VITRINE_EMBEDDER_ARTEFACT)")
        self.artefact = Path(artefact)
        self._data = _read_bytes(self.artefact)
        self.card = _card_of(self._data, self.artefact)
        self.name = self.card["name"]
        self.dim = int(self.card["dim"])
        self.input_size = int(self.card["input"]["size"])
        self.bits = self.card.get("bits")
        self._head: dict[str, np.ndarray] | None = None
        self.backbone: Embedder | None = None
        self._backbone_options = kwargs

    @functools.cached_property
    def version(self) -> str:
        return hashlib.sha256(self._data).hexdigest()[:12]

    def describe(self) -> str:
        depth = "head on " + self.card["backbone"]["model_key"] if self._is_head else "ONNX tower"
        return f"{self.model_key}: {self.dim}-d {self.card['method']} ({depth}), runtime {self.runtime}"

    @property
    def _is_head(self) -> bool:
        return self.card["weights"] == "head.npz"

    @property
    def is_tower(self) -> bool:
        """A whole ONNX tower (fine-tuned backbone, autoencoder): it embeds images, not stored vectors."""
        return not self._is_head

    def preprocess(self, image: Image.Image) -> np.ndarray:
        if self.card["input"]["preprocessing"] == "unit":
            rgb = image.convert("RGB").resize((self.input_size, self.input_size), Image.BILINEAR)
            return np.ascontiguousarray((np.asarray(rgb, dtype=np.float32) / 255.0).transpose(2, 0, 1))
        return imagenet_preprocess(image, self.input_size)

    def embed(self, images) -> np.ndarray:
        if not self._is_head:
            return super().embed(images)
        self.load()
        return self.embed_features(self.backbone.embed(images))

    def embed_features(self, features: np.ndarray) -> np.ndarray:
        """Map the backbone's unit vectors (e.g. those already stored) to this model's unit vectors."""
        if not self._is_head:
            raise ModelLoadError(f"{self.model_key} is a whole ONNX tower: it embeds images, not stored vectors")
        return l2_normalize(apply_head(self.head_weights(), np.asarray(features, dtype=np.float32)))

    def head_weights(self) -> dict[str, np.ndarray]:
        """The head's arrays, read once; the backbone is not loaded (mapping stored vectors needs none)."""
        if self._head is None:
            if not self._is_head:
                raise ModelLoadError(f"{self.model_key} is a whole ONNX tower, not a head")
            with zipfile.ZipFile(io.BytesIO(self._data)) as zf, np.load(io.BytesIO(zf.read("head.npz"))) as npz:
                self._head = {k: npz[k].astype(np.float32) for k in npz.files}
        return self._head

    def codes(self, vectors_or_features: np.ndarray, *, from_features: bool = False) -> np.ndarray:
        """Binary codes (n, bits) as 0/1 uint8, for a model trained with a code layer."""
        if not self._is_head or "w3" not in self.head_weights():
            raise ModelLoadError(f"{self.model_key} has no code layer (train the triplet method with --bits)")
        x = np.asarray(vectors_or_features, dtype=np.float32)
        if from_features:
            x = l2_normalize(apply_head(self._head, x))
        return (x @ self._head["w3"] + self._head["b3"] > 0).astype(np.uint8)

    def _load(self) -> None:
        with zipfile.ZipFile(io.BytesIO(self._data)) as zf:
            weights = zf.read(self.card["weights"])
        if self._is_head:
            self.head_weights()
            ref = self.card["backbone"]
            self.backbone = create_embedder(ref["name"], **self._backbone_options)
            if self.backbone.model_key != ref["model_key"]:
                raise ModelLoadError(
                    f"{self.artefact} was trained on {ref['model_key']} but this machine's {ref['name']} is "
                    f"{self.backbone.model_key}; retrain it, or install the pinned backbone weights"
                )
            self.backbone.load()
            self.runtime = f"numpy head on {self.backbone.runtime}"
            return
        path = self.cache_dir / "trained" / f"{self.model_key}.onnx"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_bytes(weights)
            tmp.replace(path)
        try:
            self._onnx = OnnxRunner(path, threads=self.threads)
        except Exception as exc:
            raise ModelLoadError(f"the ONNX graph in {self.artefact} does not load: {exc}") from exc
        self.onnx_path, self.runtime = path, "onnxruntime"


def apply_head(head: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The MLP head in numpy: relu(x W1 + b1) W2 + b2 (batch norm is folded into W1, b1 at export)."""
    hidden = np.maximum(x @ head["w1"] + head["b1"], 0.0)
    return hidden @ head["w2"] + head["b2"]


def _add(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    zf.writestr(info, data)


def _read_bytes(path: Path) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"model artefact not found: {path}")
    return path.read_bytes()


def _card_of(data: bytes, path: Path) -> dict:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            card = json.loads(zf.read("card.json"))
            names = set(zf.namelist())
            bad = zf.testzip()
    except (zipfile.BadZipFile, zlib.error, KeyError, ValueError, OSError, EOFError) as exc:
        raise ModelLoadError(f"{path} is not a vitrine model artefact ({type(exc).__name__}: {exc})") from exc
    if bad is not None:
        raise ModelLoadError(f"{path} is corrupt: {bad} fails its checksum")
    try:
        _check_card(card)
    except ValueError as exc:
        raise ModelLoadError(f"{path}: {exc}") from exc
    if card["weights"] not in names:
        raise ModelLoadError(f"{path} is corrupt: its card names {card['weights']}, which it does not hold")
    return card


def _check_card(card: dict) -> None:
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} card")
    for field in ("name", "method", "dim", "input"):
        if field not in card:
            raise ValueError(f"the model card lacks {field!r}")
    if card["weights"] not in ("head.npz", "model.onnx"):
        raise ValueError(f"unknown weights {card['weights']!r}")
    if card["weights"] == "head.npz" and "model_key" not in card.get("backbone", {}):
        raise ValueError("a head's card must name its backbone's model key")
    if card["input"].get("preprocessing") not in PREPROCESSING:
        raise ValueError(f"unknown preprocessing {card['input'].get('preprocessing')!r}")
