"""`vitrine model train`: train a catalog-adapted model on a tenant's catalog or an ImageFolder, evaluate, register.

With `--tenant` the model is registered for that tenant (status training -> ready | failed, with the
reason); the data is the tenant's stored backbone vectors, or `--dataset` when given. Without
`--tenant` only the artefact is written. The admin API starts this command in a process of its own.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import typer

from vitrine.cli.app import database_engine, fail, load_settings, model_app
from vitrine.cli.vision import JSON, VERBOSE, quiet_logging

log = logging.getLogger(__name__)


@model_app.command("train")
def train(
    method: str = typer.Option(..., "--method", help="supervised | triplet | design | autoencoder"),
    tenant: str = typer.Option(None, "--tenant", help="Train on this tenant's catalog and register the model"),
    dataset: str = typer.Option(
        None, "--dataset", help="fashion-mnist, or an ImageFolder (a subfolder per label, or per product)"
    ),
    finetune: bool = typer.Option(False, "--finetune", help="Fine-tune the backbone's last blocks (CUDA if present)"),
    holdout: float = typer.Option(0.2, "--holdout", min=0.05, max=0.5, help="Share of products held out"),
    seed: int = typer.Option(0, "--seed"),
    epochs: int = typer.Option(None, "--epochs", min=1, max=200),
    bits: int = typer.Option(None, "--bits", help="triplet: also learn 32, 48 or 64-bit codes"),
    train_sample: int = typer.Option(None, "--train-sample", min=20, help="Images to train on (seeded sample)"),
    test_sample: int = typer.Option(2000, "--test-sample", min=20, help="fashion-mnist: held-out t10k images"),
    workers: int = typer.Option(0, "--workers", min=0, help="Fine-tuning: image decoding processes"),
    out: Path = typer.Option(None, "--out", help="Artefact directory (default DATA_DIR/models/trained)"),
    job_id: str = typer.Option(None, "--job-id", help="The registry job to close (set by the admin API)"),
    as_json: bool = JSON,
    verbose: bool = VERBOSE,
) -> None:
    """Train, evaluate on held-out products beside the pretrained model and raw pixels, write the artefact."""
    quiet_logging(verbose)
    if not tenant and not dataset:
        fail("give --tenant (train on its catalog) or --dataset (fashion-mnist or an ImageFolder)", 2)
    if job_id and not tenant:
        fail("--job-id needs --tenant", 2)
    settings = load_settings()
    from training.run import TrainRequest

    request = TrainRequest(
        method=method, finetune=finetune, holdout=holdout, seed=seed, epochs=epochs, bits=bits, workers=workers
    )
    try:
        request.check()
    except ValueError as exc:
        fail(str(exc), 2)
    registry = _Registry(tenant, job_id, request) if tenant else None
    try:
        result = _train(settings, request, tenant, dataset, train_sample, test_sample, out or _default_out(settings))
    except (ValueError, OSError) as exc:  # TrainingError, DatasetError, ModelLoadError: the data or the files
        if registry:
            registry.fail(str(exc))
        fail(str(exc))
    except BaseException as exc:
        if registry:
            registry.fail(f"training crashed: {type(exc).__name__}: {exc}"[:500])
        raise
    if registry:
        registry.finish(result)
    if as_json:
        typer.echo(json.dumps(result.card, indent=2, default=str))
    else:
        typer.echo(format_card(result.card))


def _default_out(settings) -> Path:
    return settings.data_dir / "models" / "trained"


def _train(settings, request, tenant, dataset, train_sample, test_sample, out_dir: Path):
    from training.data import fashion_mnist, image_folder
    from training.run import train_model
    from vision.components import build_embedder
    from vitrine.bench.training import device_info

    backbone = build_embedder(settings.model_copy(update={"embedder": "efficientnet-lite0"}))
    heldout, held_out_images = None, None
    if dataset == "fashion-mnist":
        data = fashion_mnist("train", train_sample or 60_000, request.seed, root=settings.fashion_mnist_dir)
        heldout = fashion_mnist("t10k", test_sample, request.seed, root=settings.fashion_mnist_dir)
    elif dataset:
        data = image_folder(Path(dataset), sample=train_sample, seed=request.seed)
    else:
        data, rows = _catalog(tenant, backbone.model_key)
        held_out_images = _catalog_images(settings, tenant, rows)
    started = time.perf_counter()
    result = train_model(
        data,
        request,
        backbone=backbone,
        out_dir=out_dir,
        heldout=heldout,
        feature_cache=settings.data_dir / "cache" / "features",
        stage=_progress_bar,
        machine=device_info(),
        held_out_images=held_out_images,
    )
    log.info("trained %s in %.1f s", result.key, time.perf_counter() - started)
    return result


def _catalog(tenant: str, model_key: str):
    import numpy as np

    from db.session import session_factory
    from db.trained_models import catalog_training_rows
    from training.data import from_vectors

    engine = database_engine()
    try:
        with session_factory(engine).begin() as session:
            rows = catalog_training_rows(session, tenant, model_key)
    finally:
        engine.dispose()
    if not rows:
        raise ValueError(f"tenant {tenant!r} has no products embedded with {model_key} to train on")
    vectors = np.stack([r.vector for r in rows]).astype(np.float32)
    data = from_vectors(
        f"tenant {tenant}",
        [r.product for r in rows],
        [r.category for r in rows],
        vectors,
        keys=[r.item_id for r in rows],
    )
    return data, rows


HELD_OUT_PAGE = 200  # images fetched at once
HELD_OUT_SIDE = 256  # a held-out crop is kept at most this large: the backbone reads 224 px, raw pixels fewer


def _catalog_images(settings, tenant: str, rows):
    """The hook that fetches a held-out set's pixels: each item's image fetched again as the worker fetches it
    (SSRF-safe, the worker's size limits, the stored content hash checked), cut at the item's box and shrunk
    to HELD_OUT_SIDE, a page at a time, so a large held-out set never holds its full-size images."""
    from collections import Counter

    from db.deployments import ImageItem
    from streams.tower_images import ImageCrops

    by_item = {r.item_id: r for r in rows}

    def fetch(test):
        items = [by_item[int(k)] for k in test.keys]
        crops, got, failures = ImageCrops.from_settings(settings), {}, Counter()
        try:
            for start in range(0, len(items), HELD_OUT_PAGE):
                page = items[start : start + HELD_OUT_PAGE]
                cut, failed = crops.crops(
                    [ImageItem(r.item_id, 0, tenant, r.image_url, r.content_hash, r.box) for r in page]
                )
                for item_id, crop in cut.items():
                    crop.thumbnail((HELD_OUT_SIDE, HELD_OUT_SIDE))
                    got[item_id] = crop
                failures.update(failed)
        finally:
            crops.close()
        return [got.get(r.item_id) for r in items], dict(failures)

    return fetch


class _Registry:
    """The tenant's registry row for this run: opened (or adopted from the API), then finished or failed."""

    def __init__(self, tenant: str, job_id: str | None, request) -> None:
        from db.session import session_factory
        from db.trained_models import TrainingJobError, set_pid, start_job

        self.tenant, self.engine = tenant, database_engine()
        try:
            with session_factory(self.engine).begin() as session:
                if job_id is None:
                    job = start_job(
                        session,
                        tenant,
                        method=request.method,
                        finetune=request.finetune,
                        params={"holdout": request.holdout, "seed": request.seed, "epochs": request.epochs,
                                "bits": request.bits},
                    )  # fmt: skip
                    job_id = job.job_id
                    session.flush()
                    set_pid(session, tenant, job_id, os.getpid())
        except TrainingJobError as exc:  # another job of this tenant is training, or no such tenant/job
            fail(str(exc))
        except Exception as exc:
            fail(f"cannot register the training job: {type(exc).__name__}: {exc}")
        self.job_id = job_id

    def finish(self, result) -> None:
        from db.session import session_factory
        from db.trained_models import finish_job

        with session_factory(self.engine).begin() as session:
            finish_job(
                session,
                self.tenant,
                self.job_id,
                model_key=result.key,
                artefact_path=str(result.path),
                card=result.card,
            )

    def fail(self, reason: str) -> None:
        from db.session import session_factory
        from db.trained_models import fail_job

        try:
            with session_factory(self.engine).begin() as session:
                fail_job(session, self.tenant, self.job_id, reason)
        except Exception as exc:  # the reason still reaches the log and the exit code
            log.error("could not record the failure of job %s: %s", self.job_id, exc)


def _progress_bar(stage: str):
    """A tqdm bar with an ETA on stderr for one stage (features, views, epochs of training)."""
    from tqdm import tqdm

    bar = {"tqdm": None}

    def update(step: int, total: int, loss: float) -> None:
        if bar["tqdm"] is None:
            bar["tqdm"] = tqdm(total=total, desc=stage, unit="step", mininterval=1.0, leave=True)
        t = bar["tqdm"]
        t.update(step - t.n)
        if loss == loss:  # not NaN: a training step
            t.set_postfix(loss=f"{loss:.3f}", refresh=False)
        if step >= total:
            t.close()

    return update


def format_card(card: dict) -> str:
    """A model card as a readable table."""
    from vitrine.bench.training import METRIC_COLUMNS

    metrics, data, m = card["metrics"], card["data"], card.get("machine", {})
    extra = sorted({c for row in metrics["models"].values() for c in row} - set(METRIC_COLUMNS))
    lines = [
        f"model {card['key']}  ({card['method']}, {card['depth']}, {card['dim']}-d"
        + (f", {card['bits']}-bit codes" if card.get("bits") else "")
        + ")",
        f"artefact: {card['path']}",
        f"data: {data['description']}",
        f"split: {data['split']}, seed {data['seed']}; train {data['train']}, held out {data['held_out']}",
        f"held-out relevance: same {metrics['relevance']} ({metrics['queries']} queries)",
        *([f"held-out images: {held_out_images_line(data['held_out_images'])}"] if "held_out_images" in data else []),
        f"training: {card['training_seconds']} s on {m.get('cpu')} ({m.get('usable_cpus')} cpus"
        + (f", GPU {m['gpu']}" if m.get("gpu") else "")
        + f", load {m.get('load_average_1m')})",
        f"embeds: {card['embed_images_per_s']} img/s; vectors per 10k items: {card['index_mb_per_10k']} MB",
        "",
        f"{'':<24}" + "".join(f"{c:>9}" for c in METRIC_COLUMNS) + "".join(f"{c:>16}" for c in extra),
    ]
    for name, row in metrics["models"].items():
        lines.append(
            f"{name:<24}"
            + "".join(f"{row.get(c, float('nan')):>9.3f}" for c in METRIC_COLUMNS)
            + "".join(f"{row[c]:>16.3f}" if c in row else f"{'':>16}" for c in extra)
        )
    return "\n".join(lines)


def held_out_images_line(note: dict) -> str:
    """A tenant run's held-out images fetched again for the raw-pixel baseline, in one line."""
    failed = ", ".join(f"{reason} {n}" for reason, n in sorted(note.get("failed", {}).items()))
    line = f"{note['fetched']} of {note['of']} fetched" + (f" ({failed})" if failed else "")
    if "raw_pixels" in note:
        return f"{line}; raw pixels {note['raw_pixels']}"
    return line + ("; every model scored on those" if note["fetched"] < note["of"] else "")
