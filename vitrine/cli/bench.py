"""Benchmarks of the running system: `vitrine bench ingest` (and later `bench serve`)."""

from __future__ import annotations

import json

import typer

from vitrine.cli.app import bench_app, fail, load_settings, setup_logging


def _machine_line(m: dict) -> str:
    return (f"machine: {m.get('cpu')}, {m.get('cores')} cores, Python {m.get('python')}, "
            f"torch {m.get('torch')}, onnxruntime {m.get('onnxruntime')}, load {m.get('load_average_1m')}")


@bench_app.command("ingest")
def bench_ingest(products: int = typer.Option(200, min=1, help="Products to post (1-3 images each)"),
                 seed: int = typer.Option(0, help="Seed of the catalog and its images"),
                 as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table"),
                 verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
    """Post N products through the webhook into the stack; print products/s, images/s, latency, ratios."""
    from vitrine.bench_ingest import run_ingest_bench

    setup_logging(verbose)
    try:
        r = run_ingest_bench(load_settings(), products=products, seed=seed)
    except RuntimeError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(r))
        return
    f, again, s = r["first_ingest"], r["resend_unchanged"], r["settings"]
    typer.echo(_machine_line(r["machine"]))
    typer.echo(f"settings: {s['products']} products, embedder {s['embedder']} ({s['runtime']}), detector "
               f"{s['detector']}, embed batch {s['embed_batch_size']}, {s['post_batch']} events per webhook\n")
    rows = [
        ("first ingest: products/s", f["products_per_s"]),
        ("first ingest: images/s", f["images_per_s"]),
        ("first ingest: p50 / p95 event-to-indexed (s)", f"{f['latency_p50_s']} / {f['latency_p95_s']}"),
        ("embedder alone on the same images: images/s", r["embedder_only"]["images_per_s"]),
        ("pipeline / embedder ratio (goal >= 0.8)", r["pipeline_to_embedder_ratio"]),
        ("re-send unchanged: products/s (goal >= 500)", again["products_per_s"]),
        ("re-send unchanged: p50 / p95 latency (s)", f"{again['latency_p50_s']} / {again['latency_p95_s']}"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        typer.echo(f"{k:<{width}}  {v}")
