"""`vitrine bench training`: train methods on a dataset and compare them on held-out data, in one table.

Fashion-MNIST trains on (a seeded, class-balanced sample of) its `train` split and is judged on a
seeded 2,000-image sample of `t10k`; an ImageFolder is split by product (or by image) with a seed.
Each row is one training run, evaluated beside the pretrained backbone and raw pixels on the same
held-out images. Imports only training, vision and core, so `python3 -c` can run it on a machine
without the service's dependencies (the GPU figures in docs/training.md were made that way).
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from core.machine import machine_info
from training.data import TrainingSet, fashion_mnist, image_folder
from training.run import TrainRequest, TrainResult, train_model
from vision.embedder import create_embedder

log = logging.getLogger(__name__)

FASHION_MNIST = "fashion-mnist"
METRIC_COLUMNS = ("mAP@5", "mAP@10", "R@1", "R@5", "R@10")


def load_dataset(
    dataset: str, *, train_sample: int | None, test_sample: int, seed: int, fashion_mnist_dir: Path | None = None
) -> tuple[TrainingSet, TrainingSet | None]:
    """(training data, separate held-out data or None to split): `fashion-mnist` or an ImageFolder path."""
    if dataset == FASHION_MNIST:
        return (
            fashion_mnist("train", train_sample or 60_000, seed, root=fashion_mnist_dir),
            fashion_mnist("t10k", test_sample, seed, root=fashion_mnist_dir),
        )
    return image_folder(Path(dataset), sample=train_sample, seed=seed), None


def device_info() -> dict:
    """The machine, plus the GPU when torch sees one (training uses it)."""
    info = machine_info()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def run_training_bench(
    dataset: str,
    methods: list[str],
    *,
    data_dir: Path,
    fashion_mnist_dir: Path | None = None,
    finetune: bool = False,
    train_sample: int | None = None,
    test_sample: int = 2000,
    holdout: float = 0.2,
    seed: int = 0,
    epochs: int | None = None,
    bits: int | None = None,
    workers: int = 0,
    batch_size: int | None = None,
    extra: dict | None = None,
    stage=None,
) -> dict:
    """Train each method, return one JSON-able object: settings, machine, and per run the held-out table."""
    started = time.perf_counter()
    train, heldout = load_dataset(
        dataset, train_sample=train_sample, test_sample=test_sample, seed=seed, fashion_mnist_dir=fashion_mnist_dir
    )
    backbone = create_embedder("efficientnet-lite0", cache_dir=data_dir / "models", batch_size=64)
    runs = []
    for method in methods:
        request = TrainRequest(
            method=method,
            finetune=finetune and method in ("supervised", "triplet"),
            holdout=holdout,
            seed=seed,
            epochs=epochs,
            bits=bits if method == "triplet" else None,
            workers=workers,
            batch_size=batch_size,
            extra=dict(extra or {}),
        )
        result = train_model(
            train,
            request,
            backbone=backbone,
            out_dir=data_dir / "models" / "trained",
            heldout=heldout,
            feature_cache=data_dir / "cache" / "features",
            stage=stage,
            machine=device_info(),
        )
        runs.append(_run_summary(result))
    return {
        "benchmark": "training",
        "dataset": dataset,
        "settings": {
            "train": train.description,
            "held_out": heldout.description if heldout is not None else f"{holdout:.0%} of the products, seed {seed}",
            "train_sample": train_sample,
            "test_sample": test_sample if heldout is not None else None,
            "seed": seed,
            "epochs": epochs,
            "finetune": finetune,
            "bits": bits,
            **(extra or {}),
        },
        "machine": device_info(),
        "runs": runs,
        "seconds": round(time.perf_counter() - started, 1),
    }


def _run_summary(result: TrainResult) -> dict:
    card = result.card
    return {
        "key": result.key,
        "method": card["method"],
        "depth": card["depth"],
        "artefact": str(result.path),
        "relevance": card["metrics"]["relevance"],
        "queries": card["metrics"]["queries"],
        "models": card["metrics"]["models"],
        "training_seconds": card["training_seconds"],
        "embed_images_per_s": card["embed_images_per_s"],
        "index_mb_per_10k": card["index_mb_per_10k"],
        "hyperparameters": card["hyperparameters"],
        "split": card["data"]["split"],
    }


def format_table(result: dict) -> str:
    """The bench result as a readable table (one block per run)."""
    m = result["machine"]
    lines = [
        f"training bench: {result['dataset']}   ({result['seconds']} s)",
        f"train: {result['settings']['train']}",
        f"held out: {result['settings']['held_out']}",
        f"machine: {m.get('cpu')}, {m.get('usable_cpus')} usable cpus, load {m.get('load_average_1m')}"
        + (f", GPU {m['gpu']}" if m.get("gpu") else "")
        + f", torch {m.get('torch')}",
    ]
    extra_cols = sorted(
        {c for run in result["runs"] for row in run["models"].values() for c in row} - set(METRIC_COLUMNS)
    )
    header = f"{'':<26}" + "".join(f"{c:>10}" for c in METRIC_COLUMNS) + "".join(f"{c:>16}" for c in extra_cols)
    for run in result["runs"]:
        t = run["training_seconds"]
        lines += [
            "",
            f"{run['key']}   ({run['split']}; relevance: same {run['relevance']}; {run['queries']} queries)",
            f"  training: {t.get('fit')} s fit, {t.get('total')} s in all; embeds {run['embed_images_per_s']} img/s; "
            f"vectors {run['index_mb_per_10k']} MB per 10k items",
            header,
        ]
        for name, row in run["models"].items():
            lines.append(
                f"  {name:<24}"
                + "".join(f"{row.get(c, float('nan')):>10.3f}" for c in METRIC_COLUMNS)
                + "".join(f"{row[c]:>16.3f}" if c in row else f"{'':>16}" for c in extra_cols)
            )
    return "\n".join(lines)
