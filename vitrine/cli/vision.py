"""CLI commands for vision: `models`, `embed`, `detect`, `eval retrieval` (`bench vision` is in bench.py)."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import typer

from core.settings import Settings
from vitrine.cli.app import app, eval_app, fail, load_settings, setup_logging

VERBOSE = typer.Option(False, "--verbose", "-v", help="Debug logging")
JSON = typer.Option(False, "--json", help="Print one JSON object instead of a table")
METRICS = ("mAP@5", "mAP@10", "R@1", "R@5", "R@10")


def quiet_logging(verbose: bool) -> None:
    setup_logging(verbose)
    if not verbose:  # open_clip and ultralytics narrate every load step on the root logger
        logging.getLogger().setLevel(logging.WARNING)
        logging.getLogger("vision").setLevel(logging.INFO)


def build_models(settings: Settings, *, embedder: bool = True, detector: bool = True):
    """The configured models, built exactly as the worker builds them (not loaded)."""
    from vision.components import build_detector, build_embedder
    from vision.model import VisionError

    try:
        return (build_embedder(settings) if embedder else None, build_detector(settings) if detector else None)
    except VisionError as exc:
        fail(str(exc))


def load_or_fail(model) -> None:
    from vision.model import VisionError

    try:
        model.load()
    except VisionError as exc:
        fail(str(exc))


def item_policy(settings: Settings) -> dict:
    return {
        "min_score": settings.detect_min_score,
        "min_area": settings.detect_min_area,
        "max_items": settings.detect_max_items,
        "iou_threshold": settings.detect_iou_threshold,
    }


def _read(path: Path, settings: Settings):
    """LoadedImage, or the error text for this file."""
    from vision.image import ImageError, load_image

    try:
        return load_image(path.read_bytes(), max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)
    except (ImageError, OSError) as exc:
        return f"{getattr(exc, 'reason', 'unreadable')}: {exc}"


def _items_of(paths: list[Path], settings: Settings, detector):
    """Per file: (path, LoadedImage or error text, its item crops after the policy)."""
    from vision.items import extract_items

    for path in paths:
        loaded = _read(path, settings)
        if isinstance(loaded, str):
            yield path, loaded, []
        else:
            yield path, loaded, extract_items(loaded.image, detector.detect([loaded.image])[0], **item_policy(settings))


@app.command("models")
def models(
    load: bool = typer.Option(True, "--load/--no-load", help="Also load the weights to prove they work"),
    as_json: bool = JSON,
    verbose: bool = VERBOSE,
) -> None:
    """Show the configured detector and embedder, where their weights come from, and whether they load."""
    quiet_logging(verbose)
    settings = load_settings()
    from vision.model import VisionError

    embedder, detector = build_models(settings)
    rows = []
    for role, model in (("embedder", embedder), ("detector", detector)):
        row = {"role": role, "name": model.name, "loads": None, "error": None}
        if load:
            started = time.perf_counter()
            try:
                model.load()
                row.update(loads=True, load_seconds=round(time.perf_counter() - started, 2))
            except VisionError as exc:
                row.update(loads=False, error=str(exc))
        row["description"] = model.describe()
        if role == "embedder":
            row.update(
                model_key=model.model_key, dim=model.dim, runtime=model.runtime, supports_text=model.supports_text
            )
        rows.append(row)
    if as_json:
        typer.echo(json.dumps({"data_dir": str(settings.data_dir), "models": rows}, indent=2))
    else:
        for row in rows:
            state = {
                None: "not loaded (--no-load)",
                True: f"loads ({row.get('load_seconds')} s)",
                False: "DOES NOT LOAD",
            }[row["loads"]]
            typer.echo(f"{row['role']:<9} {row['description']}\n{'':<9} {state}")
            if row["error"]:
                typer.echo(f"{'':<9} {row['error']}")
    if any(r["loads"] is False for r in rows):
        raise typer.Exit(1)


@app.command("detect")
def detect(
    images: list[Path] = typer.Argument(..., help="Image files"),
    save_annotated: Path = typer.Option(None, "--save-annotated", help="Write IMAGE.annotated.jpg files here"),
    as_json: bool = JSON,
    verbose: bool = VERBOSE,
) -> None:
    """Find the items in images with the configured detector and item policy."""
    quiet_logging(verbose)
    settings = load_settings()
    _, detector = build_models(settings, embedder=False)
    load_or_fail(detector)
    out, failed = [], 0
    for path, loaded, items in _items_of(images, settings, detector):
        if isinstance(loaded, str):
            failed += 1
            out.append({"path": str(path), "error": loaded})
            continue
        entry = {
            "path": str(path),
            "width": loaded.width,
            "height": loaded.height,
            "content_hash": loaded.content_hash,
            "items": [it.detection.to_dict() for it in items],
        }
        if save_annotated:
            entry["annotated"] = str(_annotate(loaded.image, items, save_annotated, path))
        out.append(entry)
    if as_json:
        typer.echo(json.dumps({"detector": detector.describe(), "images": out}, indent=2))
    else:
        typer.echo(f"detector: {detector.describe()}")
        for entry in out:
            _print_items(entry)
    if failed:
        raise typer.Exit(1)


@app.command("embed")
def embed(
    images: list[Path] = typer.Argument(..., help="Image files"),
    text: list[str] = typer.Option([], "--text", help="Also embed this text query (CLIP) and score it"),
    as_json: bool = JSON,
    verbose: bool = VERBOSE,
) -> None:
    """Detect the items of images and embed each one with the configured embedder."""
    quiet_logging(verbose)
    settings = load_settings()
    from vision.model import VisionError

    embedder, detector = build_models(settings)
    load_or_fail(detector)
    load_or_fail(embedder)
    text_vecs = None
    if text:
        try:
            text_vecs = embedder.embed_text(text)
        except VisionError as exc:
            fail(str(exc))
    out, failed = [], 0
    for path, loaded, items in _items_of(images, settings, detector):
        if isinstance(loaded, str):
            failed += 1
            out.append({"path": str(path), "error": loaded})
            continue
        vectors = embedder.embed([it.crop for it in items])
        rows = []
        for it, vec in zip(items, vectors):
            row = {**it.detection.to_dict(), "vector": [round(float(v), 6) for v in vec]}
            if text_vecs is not None:
                row["text_similarity"] = {t: round(float(vec @ tv), 4) for t, tv in zip(text, text_vecs)}
            rows.append(row)
        out.append({"path": str(path), "content_hash": loaded.content_hash, "items": rows})
    if as_json:
        typer.echo(
            json.dumps(
                {"model_key": embedder.model_key, "dim": embedder.dim, "runtime": embedder.runtime, "images": out}
            )
        )
    else:
        typer.echo(f"embedder: {embedder.describe()}\ndetector: {detector.describe()}")
        for entry in out:
            _print_items(entry, vectors=True)
    if failed:
        raise typer.Exit(1)


def _print_items(entry: dict, vectors: bool = False) -> None:
    if "error" in entry:
        typer.echo(f"{entry['path']}: error {entry['error']}")
        return
    typer.echo(f"{entry['path']}: {len(entry['items'])} item(s)")
    for i, item in enumerate(entry["items"]):
        box = ", ".join(f"{v:.0f}" for v in item["box"])
        line = f"  #{i} {item['kind']:<7} {item['label']:<12} score {item['score']:.2f}  box ({box})"
        if vectors:
            head = " ".join(f"{v:+.3f}" for v in item["vector"][:4])
            line += f"  [{head} ...]"
            for query, sim in item.get("text_similarity", {}).items():
                line += f"  cos({query!r})={sim:.3f}"
        typer.echo(line)
    if entry.get("annotated"):
        typer.echo(f"  annotated: {entry['annotated']}")


def _annotate(image, items, out_dir: Path, source: Path) -> Path:
    from PIL import ImageDraw

    colours = {"whole": (0, 160, 255), "item": (255, 80, 0), "context": (150, 150, 150)}
    canvas = image.copy()
    draw = ImageDraw.Draw(canvas)
    width = max(2, round(max(canvas.size) / 300))
    for it in items:
        d = it.detection
        draw.rectangle(d.box, outline=colours[d.kind], width=width)
        draw.text((d.box[0] + width + 2, d.box[1] + width + 2), f"{d.label} {d.score:.2f}", fill=colours[d.kind])
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{source.stem}.annotated.jpg"
    canvas.save(target, quality=90)
    return target


@eval_app.command("retrieval")
def eval_retrieval(
    dataset: str = typer.Option("fashion-mnist", "--dataset", help="fashion-mnist, or a folder of label subfolders"),
    sample: int = typer.Option(2000, "--sample", min=20, help="Images in the seeded, class-balanced sample"),
    seed: int = typer.Option(0, "--seed"),
    model: str = typer.Option(
        None, "--model", help="A trained model (key or .vtm path), evaluated beside the configured embedder"
    ),
    as_json: bool = JSON,
    verbose: bool = VERBOSE,
) -> None:
    """Leave-one-out retrieval quality (mAP@5/10, R@1/5/10) of the embedder vs raw pixels, relevance = same label.

    With --model, the trained model is scored too, on the same images: train on one folder, judge on another."""
    quiet_logging(verbose)
    settings = load_settings()
    from core.machine import machine_info
    from vision.datasets import DatasetError, load_fashion_mnist, load_image_folder
    from vision.eval import RAW_SIDE, raw_pixel_vectors, retrieval_scores

    try:
        data = (
            load_fashion_mnist(settings.fashion_mnist_dir, sample=sample, seed=seed)
            if dataset == "fashion-mnist"
            else load_image_folder(
                Path(dataset),
                sample=sample,
                seed=seed,
                max_bytes=settings.max_image_bytes,
                max_pixels=settings.max_image_pixels,
            )
        )
    except DatasetError as exc:
        fail(str(exc))
    embedder, _ = build_models(settings, detector=False)
    load_or_fail(embedder)
    results = {}
    if model:
        trained = trained_embedder(settings, model)
        load_or_fail(trained)
        results[trained.model_key] = retrieval_scores(trained.embed(data.images), data.labels)
    started = time.perf_counter()
    vectors = embedder.embed(data.images)
    embed_s = time.perf_counter() - started
    results |= {
        embedder.model_key: retrieval_scores(vectors, data.labels),
        f"raw-pixels-{RAW_SIDE}px-rgb-euclidean": retrieval_scores(
            raw_pixel_vectors(data.images), data.labels, metric="euclidean"
        ),
    }
    report = {
        "dataset": data.name,
        "sample": data.description,
        "images": len(data.images),
        "seed": seed,
        "protocol": "leave-one-out over the sample, relevant = same label; embedder: cosine, raw pixels: "
        "euclidean; whole images (no detection)",
        "embedder": {
            "model_key": embedder.model_key,
            "dim": embedder.dim,
            "runtime": embedder.runtime,
            "seconds": round(embed_s, 1),
            "images_per_s": round(len(data.images) / embed_s, 1),
        },
        "machine": machine_info(),
        "settings": vision_settings(settings),
        "results": results,
    }
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(f"{data.description}; leave-one-out, relevant = same label (embedder: cosine; raw pixels: euclidean)")
    typer.echo(f"embedder {embedder.describe()}: {report['embedder']['images_per_s']} img/s")
    for name, scores in results.items():
        typer.echo(f"\n{name}")
        typer.echo(f"{'class':<14}{'queries':>8}" + "".join(f"{m:>9}" for m in METRICS))
        for label, row in [*scores["per_class"].items(), ("overall", scores["overall"])]:
            typer.echo(f"{label:<14}{row['queries']:>8}" + "".join(f"{_fmt(row[m]):>9}" for m in METRICS))


def trained_embedder(settings: Settings, model: str):
    """The embedder of a trained artefact given as a path, or as a key under DATA_DIR/models/trained/."""
    from vision.model import VisionError
    from vision.trained import SUFFIX, TrainedEmbedder

    path = Path(model)
    if not path.is_file():
        path = settings.data_dir / "models" / "trained" / f"{model}{SUFFIX}"
    if not path.is_file():
        fail(f"no model artefact {model!r}: give a .vtm path or a key under {path.parent} (`vitrine model list`)")
    try:
        return TrainedEmbedder(
            artefact=path,
            cache_dir=settings.data_dir / "models",
            batch_size=settings.embed_batch_size,
            threads=settings.torch_threads,
        )
    except VisionError as exc:
        fail(str(exc))


def vision_settings(settings: Settings) -> dict:
    keys = (
        "embedder",
        "detector",
        "clip_model",
        "clip_pretrained",
        "yolo_weights",
        "torch_threads",
        "embed_batch_size",
        "use_onnx",
        "detect_min_score",
        "detect_min_area",
        "detect_max_items",
        "detect_iou_threshold",
    )
    return {k: getattr(settings, k) for k in keys}


def _fmt(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}"
