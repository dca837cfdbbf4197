"""One training run: split, features, fit, held-out comparison, artefact with its model card.

Every run evaluates on products it never trained on (a seeded split, or a separate held-out set),
beside the pretrained backbone and raw pixels on the very same images, and writes the figures into
the model card inside the artefact.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training import autoencoder as ae
from training.data import MIN_TEST_QUERIES, TrainingError, TrainingSet, split_holdout
from training.evaluate import compare, index_megabytes
from training.features import DESIGN_VIEWS, PRODUCT_VIEWS, backbone_features, view_features
from training.finetune import FinetuneConfig, device_name, finetune
from training.methods import METHODS, HeadConfig, HeadData
from vision.embedder import Embedder, l2_normalize
from vision.eval import raw_pixel_vectors
from vision.trained import TrainedEmbedder, apply_head, write_artefact

log = logging.getLogger(__name__)

ALL_METHODS = (*METHODS, "autoencoder")
Stage = Callable[[str], Callable[[int, int, float], None] | None]  # stage name -> progress callback
# A held-out set of stored vectors -> the image of each entry (None: not available) and why not, by reason.
HeldOutImages = Callable[[TrainingSet], tuple[list, dict[str, int]]]


@dataclass
class TrainRequest:
    """What to train; every field lands in the model card."""

    method: str
    finetune: bool = False
    holdout: float = 0.2
    seed: int = 0
    epochs: int | None = None
    bits: int | None = None
    positives: str = "auto"  # category | product | auto (product when products have several photos)
    views: int = 2  # augmented views per image (triplet on single-photo products, design)
    workers: int = 0  # fine-tuning DataLoader workers
    batch_size: int | None = None
    extra: dict = field(default_factory=dict)

    def check(self) -> None:
        """Refuse contradictory requests before any work."""
        if self.method not in ALL_METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(ALL_METHODS)}")
        if self.bits is not None and self.method != "triplet":
            raise ValueError("--bits is for the triplet method (its quantization head)")
        if self.bits is not None and self.finetune:
            raise ValueError("--bits trains a code layer on the frozen-backbone head; drop --finetune or --bits")
        if self.finetune and self.method not in ("supervised", "triplet"):
            raise ValueError("--finetune supports the supervised and triplet methods")
        if not 0 < self.holdout < 1:
            raise ValueError("--holdout must be between 0 and 1")
        if self.positives not in ("auto", "category", "product"):
            raise ValueError("positives must be auto, category or product")


@dataclass
class TrainResult:
    path: Path
    key: str
    card: dict


def train_model(
    data: TrainingSet,
    request: TrainRequest,
    *,
    backbone: Embedder,
    out_dir: Path,
    heldout: TrainingSet | None = None,
    feature_cache: Path | None = None,
    stage: Stage | None = None,
    machine: dict | None = None,
    held_out_images: HeldOutImages | None = None,
) -> TrainResult:
    """Train `request.method` on `data` (minus its held-out split, or all of it when `heldout` is given).

    `held_out_images`: for data of stored vectors only (a tenant's catalog), fetches the held-out entries'
    images so that raw pixels are scored beside the trained and pretrained models (`_held_out_pixels`).
    """
    request.check()
    stage = stage or (lambda name: None)
    started = time.perf_counter()
    if heldout is None:
        train_idx, test_idx, how = split_holdout(data, request.holdout, request.seed)
        train, test = data.subset(train_idx), data.subset(test_idx)
    else:
        train, test, how = data, heldout, f"separate held-out set ({heldout.description})"
        overlap = set(train.products.tolist()) & set(test.products.tolist())
        if overlap:
            raise TrainingError(f"{len(overlap)} products are in both the training and the held-out set")
    needs_images = request.finetune or request.method in ("autoencoder", "design")
    if needs_images and train.images is None:
        raise TrainingError(
            f"{request.method}{' fine-tuning' if request.finetune else ''} learns from images, and this data has "
            "only stored vectors; export the catalog's images as an ImageFolder and use --dataset"
        )
    timings: dict[str, float] = {}
    pixels = None
    if test.images is None and held_out_images is not None:
        t = time.perf_counter()
        test, pixels = _held_out_pixels(test, held_out_images)
        timings["held-out images"] = time.perf_counter() - t
    t = time.perf_counter()
    test_features = _features(backbone, test, feature_cache, stage("held-out features"))
    timings["held-out features"] = time.perf_counter() - t
    positives = request.positives
    if positives == "auto":
        positives = "product" if (train.multi_photo or request.method == "triplet") else "category"

    with tempfile.TemporaryDirectory() as tmp:
        if request.method == "autoencoder":
            cfg = ae.AutoencoderConfig(
                epochs=request.epochs or ae.AutoencoderConfig.epochs,
                seed=request.seed,
                batch_size=request.batch_size or 64,
                **request.extra,
            )
            t = time.perf_counter()
            model, fitted = ae.fit_autoencoder(train.images, cfg, stage("autoencoder"))
            timings["fit"] = time.perf_counter() - t
            graph = ae.encoder_onnx(model, cfg, Path(tmp) / "encoder.onnx")
            artefact = {"onnx": graph}
            card = _card("autoencoder", "pixels", cfg.code, {"size": cfg.size, "preprocessing": "unit"}, None)
            hyper = cfg.as_dict()
        elif request.finetune:
            cfg = FinetuneConfig(
                epochs=request.epochs or FinetuneConfig.epochs,
                seed=request.seed,
                workers=request.workers,
                batch_size=request.batch_size or 128,
                **request.extra,
            )
            codes = _codes(train, positives)
            t = time.perf_counter()
            model, fitted = finetune(
                backbone, train.images, codes, cfg, method=request.method, progress=stage("fine-tune")
            )
            timings["fit"] = time.perf_counter() - t
            graph = _tower_onnx(model, backbone, Path(tmp) / "tower.onnx")
            artefact = {"onnx": graph}
            card = _card(
                f"{request.method}-finetune", "finetune", cfg.out_dim,
                {"size": backbone.input_size, "preprocessing": "imagenet"}, backbone,
            )  # fmt: skip
            hyper = {**cfg.as_dict(), "positives": positives, "device": device_name()}
        else:
            cfg = HeadConfig(
                epochs=request.epochs or HeadConfig.epochs,
                seed=request.seed,
                bits=request.bits,
                batch_size=request.batch_size or 256,
                **request.extra,
            )
            t = time.perf_counter()
            train_features = _features(backbone, train, feature_cache, stage("training features"))
            timings["training features"] = time.perf_counter() - t
            views = None
            # Views are the positives of single-photo products (triplet) and the whole signal of design.
            wants_views = request.method == "design" or (request.method == "triplet" and not train.multi_photo)
            if wants_views:
                if train.images is None:
                    raise TrainingError(
                        "the triplet method needs several photos per product, or the images to make augmented "
                        "views of; this catalog has one image per product and only stored vectors"
                    )
                t = time.perf_counter()
                strength = DESIGN_VIEWS if request.method == "design" else PRODUCT_VIEWS
                views = view_features(
                    backbone,
                    train.images,
                    views=max(2, request.views),
                    strength=strength,
                    seed=request.seed,
                    progress=stage("augmented views"),
                )
                timings["augmented views"] = time.perf_counter() - t
            method = METHODS[request.method](cfg)
            t = time.perf_counter()
            fitted = method.fit(HeadData(train_features, _codes(train, positives), views), stage(request.method))
            timings["fit"] = time.perf_counter() - t
            artefact = {"head": fitted.weights}
            card = _card(
                f"{request.method}-head", "head", cfg.out_dim,
                {"size": backbone.input_size, "preprocessing": "imagenet"}, backbone,
            )  # fmt: skip
            hyper = {**cfg.as_dict(), "positives": positives, "views": request.views if views is not None else 0}
        card.update(
            method=request.method,
            bits=request.bits,
            hyperparameters=hyper,
            loss_per_epoch=[round(x, 5) for x in fitted.losses],
            data={
                "source": data.name,
                "description": data.description,
                "split": how,
                "holdout": request.holdout if heldout is None else None,
                "seed": request.seed,
                "train": train.summary(),
                "held_out": test.summary(),
                **({"held_out_images": pixels} if pixels is not None else {}),
            },
        )
        # Evaluate exactly what will serve: the artefact's own embedder (ONNX towers) or its head function.
        probe = write_artefact(Path(tmp) / "probe", card, **artefact)
        # A head reuses the backbone's model cache (its ONNX graph is exported once, not per run); a tower's
        # graph is unpacked into the temporary directory, not left in the cache under the probe's key.
        cache = backbone.cache_dir if "head" in artefact else Path(tmp)
        trained = TrainedEmbedder(artefact=probe, cache_dir=cache, batch_size=backbone.batch_size)
        evaluation, throughput = _evaluate(trained, backbone, test, test_features, request.bits)
    timings["total"] = time.perf_counter() - started
    card["metrics"] = evaluation
    card["index_mb_per_10k"] = {
        "trained": index_megabytes(card["dim"]),
        "pretrained": index_megabytes(backbone.dim),
        **({f"{request.bits}-bit codes": index_megabytes(0, bits=request.bits)} if request.bits else {}),
    }
    card["embed_images_per_s"] = throughput
    card["training_seconds"] = {k: round(v, 1) for k, v in timings.items()}
    card["machine"] = machine or {}
    path = write_artefact(out_dir, card, **artefact)
    key = path.name.removesuffix(".vtm")
    log.info("wrote %s (%s)", path, key)
    return TrainResult(path=path, key=key, card={**card, "key": key, "path": str(path)})


def _held_out_pixels(test: TrainingSet, fetch: HeldOutImages) -> tuple[TrainingSet, dict]:
    """The held-out set with its images, and what the card says of them.

    Every candidate (trained, pretrained, raw pixels) is scored on the same entries: when some images
    could not be had, on the entries whose image came back, if at least MIN_TEST_QUERIES did; otherwise on
    all entries, without the raw-pixel baseline (the card says why).
    """
    images, failures = fetch(test)
    keep = [i for i, im in enumerate(images) if im is not None]
    note = {"fetched": len(keep), "of": len(test), "failed": {k: n for k, n in failures.items() if n}}
    if len(keep) < MIN_TEST_QUERIES:
        note["raw_pixels"] = f"not scored: {len(keep)} of {len(test)} held-out images could be fetched"
        log.warning("held-out images: %s (%s)", note["raw_pixels"], dict(failures))
        return test, note
    if len(keep) < len(test):
        note["scored_on"] = f"the {len(keep)} held-out entries whose image came back, for every candidate"
        log.warning("held-out images: %d of %d fetched (%s)", len(keep), len(test), dict(failures))
    return test.subset(keep).with_images([images[i] for i in keep]), note


def _features(backbone: Embedder, ts: TrainingSet, cache: Path | None, progress) -> np.ndarray:
    if ts.features is not None:
        return ts.features
    return backbone_features(backbone, ts.images, cache_dir=cache, progress=progress)


def _codes(ts: TrainingSet, positives: str) -> np.ndarray:
    keys = ts.products if positives == "product" else ts.labels
    return np.unique(keys, return_inverse=True)[1].astype(np.int64)


def _card(name: str, depth: str, dim: int, input_spec: dict, backbone: Embedder | None) -> dict:
    card = {"name": name, "depth": depth, "dim": int(dim), "input": input_spec}
    if backbone is not None:
        card["backbone"] = {"name": backbone.name, "model_key": backbone.model_key}
    return card


def _evaluate(trained: TrainedEmbedder, backbone: Embedder, test: TrainingSet, test_features, bits):
    if trained.card["weights"] == "head.npz":
        trained.load()
        vectors = trained.embed_features(test_features)
    else:
        vectors = trained.embed(test.images)
    candidates = {"trained": (vectors, "cosine"), "pretrained": (test_features, "cosine")}
    if bits:
        signs = trained.codes(vectors).astype(np.float32) * 2 - 1  # cosine on +-1 vectors ranks like Hamming
        candidates[f"trained {bits}-bit codes"] = (signs, "cosine")
    if test.images is not None:
        candidates["raw pixels"] = (raw_pixel_vectors(test.images), "euclidean")
    result = compare(candidates, test.products, test.labels, images=test.images)
    throughput = {}
    if test.images is not None:
        sample = test.images[: min(256, len(test.images))]
        for name, embedder in (("trained", trained), ("pretrained", backbone)):
            embedder.embed(sample[:2])  # warm-up (session creation, first-call allocations)
            t = time.perf_counter()
            embedder.embed(sample)
            throughput[name] = round(len(sample) / (time.perf_counter() - t), 1)
    return result, throughput


def _tower_onnx(model, backbone: Embedder, path: Path) -> bytes:
    import torch

    from vision.onnx_export import export_onnx

    example = torch.from_numpy(np.stack([backbone.preprocess(im) for im in _probe_images(backbone.input_size)]))
    export_onnx(model, example, path)
    return path.read_bytes()


def _probe_images(size: int):
    from PIL import Image

    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((size, size)) for _ in range(2)]


def head_vectors(weights: dict, features: np.ndarray) -> np.ndarray:
    """Unit vectors of a head applied to backbone features (what TrainedEmbedder.embed_features serves)."""
    return l2_normalize(apply_head(weights, features))
