"""`vitrine model make-dataset same-product`: build the "same product, different photo" set (training/multiview.py)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from vitrine.cli.app import fail, model_app, setup_logging

make_dataset_app = typer.Typer(
    help="Build evaluation and training sets that install nowhere else (printed as a table, or JSON).",
    no_args_is_help=True,
)
model_app.add_typer(make_dataset_app, name="make-dataset")


@make_dataset_app.command("same-product")
def same_product(
    out: Path = typer.Option(..., "--out", help="Folder to write: OUT/<product>/<k>.jpg, products.json"),
    source: Path = typer.Option(
        None,
        "--source",
        help="RGBA cut-outs in topic subfolders (default /usr/share/openclipart/png: Debian openclipart-png)",
    ),
    products: int = typer.Option(600, "--products", min=1, help="Products to draw, balanced over categories"),
    photos: int = typer.Option(3, "--photos", min=2, help="Photos per product: 1 studio + the rest street"),
    size: int = typer.Option(256, "--size", min=64, help="Side of the square photos, px"),
    min_per_category: int = typer.Option(8, "--min-per-category", min=1, help="Skip smaller categories"),
    seed: int = typer.Option(0, "--seed", min=0, help="Same seed and arguments: byte-identical files"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier build in --out"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging"),
) -> None:
    """Products with a studio shot and street shots each, from clip-art cut-outs: train on some, test on others."""
    setup_logging(verbose)
    from core.machine import machine_info
    from training.multiview import OPENCLIPART_DIR, build_multiview_set
    from vision.datasets import DatasetError

    try:
        summary = build_multiview_set(
            source or OPENCLIPART_DIR,
            out,
            products=products,
            photos=photos,
            size=size,
            seed=seed,
            min_per_category=min_per_category,
            overwrite=overwrite,
        )
    except DatasetError as exc:
        fail(str(exc))
    report = {**summary.to_dict(), "machine": machine_info()}
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(report["rejected"].items(), key=lambda x: -x[1]))
    m = report["machine"]
    typer.echo(
        f"same-product set: {report['products']} products x {report['photos']} photos "
        f"({report['products'] * report['photos']} JPEGs, {report['size']} px) in {report['out_dir']}\n"
        f"source: {report['source_dir']}: {report['scanned']} drawings scanned, {report['usable']} usable cut-outs"
        f" (skipped: {skipped or 'none'})\n"
        f"seed {report['seed']}, {len(report['categories'])} categories, {report['seconds']} s "
        f"on {m.get('cpu')}, {m.get('cores')} cores, load {m.get('load_average_1m')}\n"
    )
    width = max(len("category"), *(len(c) for c in report["categories"]))
    typer.echo(f"{'category':<{width}}  products")
    for category, n in report["categories"].items():
        typer.echo(f"{category:<{width}}  {n:>8}")
