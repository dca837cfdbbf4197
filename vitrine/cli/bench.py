"""Every `vitrine bench` command: ingest, serve, vision, stats, dashboard, outage. The logic lives in vitrine/bench/."""

from __future__ import annotations

import json

import typer

from vitrine.cli import vision as vision_cli
from vitrine.cli.app import USAGE, bench_app, database_engine, fail, load_settings, setup_logging


def _machine_line(m: dict) -> str:
    return (
        f"machine: {m.get('cpu')}, {m.get('cores')} cores, Python {m.get('python')}, "
        f"torch {m.get('torch')}, onnxruntime {m.get('onnxruntime')}, load {m.get('load_average_1m')}"
    )


def _broker_note(server: dict) -> str:
    """The broker's storage and the exposure batching, when the figures recorded them (older JSON did not)."""
    if "broker_storage" not in server:
        return ""
    return f", broker {server['broker_storage']}, exposures linger {server['exposure_linger_s']:g} s"


@bench_app.command("ingest")
def bench_ingest(
    products: int = typer.Option(200, min=1, help="Products to post (1-3 images each)"),
    seed: int = typer.Option(0, help="Seed of the catalog and its images"),
    broker: str = typer.Option(
        None,
        help="Storage of the embedded broker: durable or memory (default: VITRINE_BROKER_STORAGE, or the "
        "running `vitrine up`'s)",
    ),
    latency_posts: int = typer.Option(200, min=0, help="Single-event webhooks timed one after another (0 = skip)"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Post N products through the webhook into the stack; print webhook latency, products/s, images/s, ratios."""
    from streams.embedded_broker import BROKER_STORAGES
    from vitrine.bench.ingest import run_ingest_bench

    setup_logging(verbose)
    if broker is not None and broker not in BROKER_STORAGES:
        fail(f"--broker must be one of {', '.join(BROKER_STORAGES)}, not {broker!r}")
    try:
        r = run_ingest_bench(load_settings(), products=products, seed=seed, broker=broker, latency_posts=latency_posts)
    except RuntimeError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(r))
        return
    f, again, s = r["first_ingest"], r["resend_unchanged"], r["settings"]
    typer.echo(_machine_line(r["machine"]))
    typer.echo(
        f"settings: {s['products']} products, embedder {s['embedder']} ({s['runtime']}), detector "
        f"{s['detector']}, embed batch {s['embed_batch_size']}, {s['post_batch']} events per webhook, "
        f"worker model streams {r.get('model_streams', 1)}, broker storage {s['broker_storage']}\n"
    )
    lat = r["webhook_latency"]
    rows = [
        *(
            [
                (
                    f"webhook, one event per POST ({lat['posts']} POSTs): p50 / p99 (ms)",
                    f"{lat['p50_ms']} / {lat['p99_ms']}",
                )
            ]
            if lat
            else []
        ),
        ("first ingest: events accepted by the webhook per s", f["accepted_per_s"]),
        ("first ingest: products/s", f["products_per_s"]),
        ("first ingest: images/s", f["images_per_s"]),
        ("first ingest: p50 / p95 event-to-indexed (s)", f"{f['latency_p50_s']} / {f['latency_p95_s']}"),
        ("embedder alone on the same images: images/s", r["embedder_only"]["images_per_s"]),
        (
            "  measured before / after the pipeline (the faster counts)",
            " / ".join(str(m["all_cores"]["images_per_s"]) for m in r["embedder_only_runs"].values()),
        ),
        ("pipeline / embedder ratio (goal >= 0.8)", r["pipeline_to_embedder_ratio"]),
        *(
            [
                (f"embedder alone, worker's {w['streams']} streams x 1 thread: images/s", w["images_per_s"]),
                ("pipeline / same-configuration embedder ratio", r["pipeline_to_worker_config_ratio"]),
            ]
            if (w := r.get("embedder_only_worker_config"))
            else []
        ),
        ("re-send unchanged: products/s (goal >= 500)", again["products_per_s"]),
        ("re-send unchanged: p50 / p95 latency (s)", f"{again['latency_p50_s']} / {again['latency_p95_s']}"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        typer.echo(f"{k:<{width}}  {v}")


@bench_app.command("broker")
def bench_broker(
    storage: str = typer.Option("durable", help="Storage of the broker under test: durable or memory"),
    steps: str = typer.Option("3000,3000", help="Batches added per step, comma-separated"),
    retention: bool = typer.Option(
        True, help="Durable storage: run a retention pass after each step's read, as `vitrine up` does"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Grow one partition of a broker of its own; print produce latency, the group's read and fetch times per size."""
    from streams.embedded_broker import BROKER_STORAGES
    from vitrine.bench.broker import run_broker_bench

    setup_logging(verbose)
    if storage not in BROKER_STORAGES:
        fail(f"--storage must be one of {', '.join(BROKER_STORAGES)}, not {storage!r}")
    try:
        sizes = [int(x) for x in steps.split(",") if x.strip()]
    except ValueError:
        fail(f"--steps must be integers separated by commas, not {steps!r}")
    try:
        r = run_broker_bench(load_settings().data_dir, storage=storage, steps=sizes, retention=retention)
    except RuntimeError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(r))
        return
    typer.echo(_machine_line(r["machine"]))
    typer.echo(
        f"storage {r['storage']}, retention {'on' if r['retention'] else 'off'}, "
        f"consumer fetch wait {r['fetch_max_wait_ms']} ms (the worker's)\n"
    )
    head = ("batches", "stored", "produce ms", "group read s", "records", "deleted", "pass s", "resting s")
    head += ("fetch last ms", "left")
    typer.echo("  ".join(f"{h:>13}" for h in head))
    for row in r["steps"]:
        cells = [row[k] for k in ("batches", "stored_when_read", "produce_ms", "worker_read_s", "worker_records")]
        cells += [row["retention_deleted"], row["retention_s"], row["retention_rested_s"]]
        cells += [row["fetch_last_ms"], row["stored_after"]]
        typer.echo("  ".join(f"{'-' if c is None else c:>13}" for c in cells))


@bench_app.command("serve")
def bench_serve(
    products: int = typer.Option(100_000, min=100, help="Synthetic products (one 1280-d item each)"),
    seed: int = typer.Option(0, help="Seed of the clustered vectors and of the requests"),
    levels: str = typer.Option(
        None, help="Concurrent users per level, comma-separated (default 1,10,50,100; with --index 1,10,100)"
    ),
    think: float = typer.Option(1.0, min=0, help="Mean think time between a user's requests (s)"),
    duration: float = typer.Option(
        60.0,
        min=1,
        help="Seconds per level (60: a 100-shopper level holds ~6,000 requests, so one stall of a fraction of a "
        "second does not decide its p99, as it did the 12 s levels' ~1,200)",
    ),
    recall_sample: int = typer.Option(200, min=1, help="Requests compared with exact search"),
    index: str = typer.Option(
        None,
        "--index",
        help="Index kinds to compare, comma-separated (halfvec,binary,codes): serves a trained head's "
        "vectors through each instead of the two arms",
    ),
    bits: int = typer.Option(64, help="With --index: code width of the trained head (32, 48 or 64)"),
    head_dim: int = typer.Option(128, min=8, max=2000, help="With --index: the trained head's dimension"),
    epochs: int = typer.Option(3, min=1, help="With --index: training epochs of the head"),
    train_sample: int = typer.Option(10_000, min=1000, help="With --index: vectors the head trains on"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Load N products, drive /v1/recommendations for both arms (or each --index kind); print QPS, p50/p99, recall."""
    from db.vector_index import INDEX_KINDS

    setup_logging(verbose)
    try:
        users = [int(x) for x in (levels or ("1,10,100" if index else "1,10,50,100")).split(",") if x.strip()]
    except ValueError:
        fail(f"--levels must be integers separated by commas, not {levels!r}")
    if not users or min(users) < 1:
        fail("--levels needs at least one level of 1 or more users")
    kinds = [k.strip() for k in (index or "").split(",") if k.strip()]
    unknown = [k for k in kinds if k not in INDEX_KINDS]
    if index is not None and (unknown or not kinds):
        fail(f"--index takes {', '.join(INDEX_KINDS)} (comma-separated), not {index!r}")
    if bits not in (32, 48, 64):
        fail(f"--bits must be 32, 48 or 64, not {bits}")
    try:
        if kinds:
            from vitrine.bench.index_kinds import run_index_bench

            r = run_index_bench(
                load_settings(),
                kinds=list(dict.fromkeys(kinds)),
                products=products,
                seed=seed,
                levels=users,
                think_s=think,
                duration_s=duration,
                recall_sample=recall_sample,
                bits=bits,
                out_dim=head_dim,
                train_sample=train_sample,
                epochs=epochs,
            )
        else:
            from vitrine.bench.serve import run_serve_bench

            r = run_serve_bench(
                load_settings(),
                products=products,
                seed=seed,
                levels=users,
                think_s=think,
                duration_s=duration,
                recall_sample=recall_sample,
            )
    except RuntimeError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(r))
        return
    (print_index_table if kinds else print_serve_table)(r)


def _tail(level: dict) -> str:
    """Requests over 50 ms and in how many seconds of the level they were sent (vitrine.bench.serve.tail_seconds);
    "-" for figures recorded before the level kept it."""
    t = level.get("tail")
    return f"{t['over_50ms']} ({t['seconds_over_50ms']})" if t else "-"


def print_index_table(r: dict) -> None:
    """The `bench serve --index` figures as a table (also renders a saved `--json` result)."""
    s, ld, h, g = r["settings"], r["load"], r["head"], r["goals"]
    typer.echo(
        _machine_line(r["machine"]) + f" (1/5/15 min: before {r['load_average_before']}, "
        f"after {r['load_average_after']})"
    )
    typer.echo(
        f"settings: {s['products']} products, {s['backbone_dim']}-d backbone vectors ({s['backbone']}) "
        f"through a {s['dim']}-d triplet head with {s['bits']}-bit codes ({s['model']}), {s['centres']} clusters, "
        f"{s['categories']} categories, seed {s['seed']}, {s['duration_s']:g} s per level, limit {s['limit']}"
    )
    sv = s["server"]
    typer.echo(
        f"server: postgres shared_buffers {sv['shared_buffers']}, uvicorn {sv['uvicorn']}, "
        f"hnsw.ef_search {sv['hnsw_ef_search']}, serve concurrency {sv.get('serve_concurrency')}{_broker_note(sv)}"
    )
    typer.echo(f"note: {r['note']}\n")
    typer.echo(
        f"head: {'reused' if h['reused'] else 'trained'} on {h['recipe']['sample']} vectors labelled by cluster, "
        f"{h['recipe']['epochs']} epochs in {h['train_s']} s (losses {h['losses']})"
    )
    if ld["reused"]:
        typer.echo(f"catalog: reused ({ld['rows']} rows)")
    else:
        typer.echo(
            f"catalog: {ld['rows']} rows in {ld['load_s']} s ({ld['rows_per_s']} rows/s; head mapping "
            f"{ld['head_map_s']} s), vectors and codes"
        )
    typer.echo(f"exact search (the recall reference): {s['exact_s_per_query']} s per query\n")
    typer.echo(f"{'index':<9}{'build s':>9}{'size MB':>10}  structure")
    for kind, b in r["indexes"].items():
        how = f"IVFFlat, {b['lists']} lists" if b.get("method") == "ivfflat" else "HNSW"
        if b.get("entries") is not None:
            how += f", {b['entries']} entries"
        built = b["build_s"] if b["build_s"] is not None else "reused"
        typer.echo(f"{kind:<9}{built!s:>9}{b['size_mb']!s:>10}  {how}")
    if "ivf" in s:
        ivf = s["ivf"]
        filtered = ivf.get("rerank_factor_filtered", {})
        for k, b in r["indexes"].items():
            if b.get("method") != "ivfflat":
                continue
            t = b.get("tuning")
            how = (
                f"tuned on {t['sample']} products in {t['seconds']} s, recall@10 {t['recall']} "
                f"(target {t['target']}{'' if t['met'] else ', not met'})"
                if t
                else "not tuned (the defaults)"
            )
            typer.echo(
                f"IVFFlat {k}: without a category {b.get('probes', '?')} probes x {b.get('rerank_factor', '?')} "
                f"Hamming candidates (x 40), {how}; with one {ivf['probes']} probes x {filtered.get(k, '?')}"
            )
    typer.echo(
        f"\n{'index':<9}{'mode':<16}{'users':>6}{'req':>7}{'QPS':>8}{'p50 ms':>9}{'p95 ms':>9}"
        f"{'p99 ms':>9}{'max ms':>9}{'errors':>7}{'>50 ms (in s)':>15}"
    )
    for kind, k in r["kinds"].items():
        for mode, label in (("think", f"think {s['think_s']:g} s"), ("max_throughput", "think 0 (max)")):
            for x in k["levels"][mode]:
                if "skipped" in x:
                    typer.echo(f"{kind:<9}{label:<16}{x['users']:>6}  not run: {x['skipped']}")
                    continue
                typer.echo(
                    f"{kind:<9}{label:<16}{x['users']:>6}{x['requests']:>7}{x['qps']:>8}{x['p50_ms']!s:>9}"
                    f"{x['p95_ms']!s:>9}{x['p99_ms']!s:>9}{x['max_ms']!s:>9}{x['errors']:>7}{_tail(x):>15}"
                )
        raw = k["raw_query"]
        typer.echo(
            f"{kind:<9}{'raw query':<16}{1:>6}{raw['requests']:>7}{raw['qps']:>8}{raw['p50_ms']!s:>9}"
            f"{raw['p95_ms']!s:>9}{raw['p99_ms']!s:>9}{raw['max_ms']!s:>9}{0:>7}   strategies {raw['strategies']}"
        )
    typer.echo("")
    for kind, k in r["kinds"].items():
        for source, label in (("recall_index", "index alone"), ("recall", "served by the API")):
            typer.echo(
                f"recall@10 {kind:<8} {label:<18}: "
                + ", ".join(
                    f"{name} {x['recall_at_10']} (min {x['min']}, short {x['short_answers']})"
                    for name, x in k[source].items()
                )
            )
        typer.echo(f"{kind}: {k['api_index_scans']} scans of its index while the API served (recall pass, levels)")
    typer.echo("")
    for kind, x in g["per_kind"].items():
        typer.echo(
            f"goal {kind}: recall@10 >= {g['recall']} with and without category: {x['recall_all']} / "
            f"{x['recall_same_category']} -> {'met' if x['recall_met'] else 'MISSED'}; p99 < {g['p99_ms']:g} ms at "
            f"{g['top_users']} users: {x['p99_ms_at_top_users']} ms -> {'met' if x['p99_met'] else 'MISSED'}"
        )
    if g["halfvec_over_binary_size"] is not None:
        typer.echo(
            f"goal binary index >= 8x smaller than halfvec: {g['halfvec_over_binary_size']}x -> "
            f"{'met' if g['binary_8x_smaller'] else 'MISSED'}"
        )


def print_serve_table(r: dict) -> None:
    """The `bench serve` figures as a table (also renders a saved `--json` result)."""
    s, ld, g, raw = r["settings"], r["load"], r["goals"], r["raw_query"]
    typer.echo(
        _machine_line(r["machine"]) + f" (1/5/15 min: before {r['load_average_before']}, "
        f"after {r['load_average_after']})"
    )
    typer.echo(
        f"settings: {s['products']} products x {s['dim']}-d ({s['model']}), {s['centres']} clusters, "
        f"{s['categories']} categories, seed {s['seed']}, {s['duration_s']:.0f} s per level, limit {s['limit']}"
    )
    if s.get("server"):
        sv = s["server"]
        typer.echo(
            f"server: postgres shared_buffers {sv['shared_buffers']}, uvicorn {sv['uvicorn']}, "
            f"hnsw.ef_search {sv['hnsw_ef_search']}, lookup cache TTL {sv['lookup_cache_ttl_s']:g} s, "
            f"popularity list TTL {sv['popularity_cache_ttl_s']:g} s, "
            f"serve concurrency {sv.get('serve_concurrency', 40)}{_broker_note(sv)}"
        )
    typer.echo(f"note: {r['note']}\n")
    if ld["reused"]:
        typer.echo(f"catalog: reused ({ld['rows']} rows); HNSW build {ld['hnsw_build_s'] or 'not needed'}")
    else:
        typer.echo(
            f"catalog: {ld['rows']} rows in {ld['load_s']} s ({ld['rows_per_s']} rows/s), "
            f"HNSW build {ld['hnsw_build_s']} s (maintenance_work_mem 1GB)"
        )
    typer.echo(
        f"\n{'arm':<9}{'mode':<16}{'users':>6}{'req':>7}{'QPS':>8}{'p50 ms':>9}{'p95 ms':>9}"
        f"{'p99 ms':>9}{'max ms':>9}{'errors':>7}{'>50 ms (in s)':>15}"
    )
    for arm, modes in r["arms"].items():
        for mode, label in (("think", f"think {s['think_s']:g} s"), ("max_throughput", "think 0 (max)")):
            for x in modes[mode]:
                if "skipped" in x:
                    typer.echo(f"{arm:<9}{label:<16}{x['users']:>6}  not run: {x['skipped']}")
                    continue
                typer.echo(
                    f"{arm:<9}{label:<16}{x['users']:>6}{x['requests']:>7}{x['qps']:>8}{x['p50_ms']!s:>9}"
                    f"{x['p95_ms']!s:>9}{x['p99_ms']!s:>9}{x['max_ms']!s:>9}{x['errors']:>7}{_tail(x):>15}"
                )
    typer.echo(
        f"{'raw':<9}{'sequential':<16}{1:>6}{raw['requests']:>7}{raw['qps']:>8}{raw['p50_ms']!s:>9}"
        f"{raw['p95_ms']!s:>9}{raw['p99_ms']!s:>9}{raw['max_ms']!s:>9}{0:>7}   strategies {raw['strategies']}"
    )
    for arm, modes in r["arms"].items():
        if modes.get("caches"):
            typer.echo(
                f"cache hit rates ({arm} levels): "
                + ", ".join(f"{name} {c['hit_rate']:.1%} of {c['lookups']}" for name, c in modes["caches"].items())
            )
    for name, x in r["recall"].items():
        typer.echo(
            f"recall@10 served vs exact ({name}): {x['recall_at_10']} over {x['requests']} requests "
            f"(min {x['min']}, short answers {x['short_answers']})"
        )
    typer.echo(
        f"\ngoal visual p99 < 50 ms at {g['top_users']} users (think {s['think_s']:g} s): "
        f"{g['visual_p99_ms_at_top_users']} ms -> {'met' if g['visual_p99_under_50ms'] else 'MISSED'}"
    )
    typer.echo(
        f"goal API p50 (1 user, sequential) / raw p50 < 2: {g['api_p50_over_raw_p50']} -> "
        f"{'met' if g['api_overhead_under_2x'] else 'MISSED'}"
    )


@bench_app.command("vision")
def bench_vision(
    images: int = typer.Option(64, "--images", min=32, help="Size of the fixed image set"),
    detector_name: str = typer.Option(None, "--detector", help="Override VITRINE_DETECTOR"),
    yolo_weights: str = typer.Option(
        None, "--yolo-weights", help="Override VITRINE_YOLO_WEIGHTS (yolo11n.yaml = same compute, random weights)"
    ),
    also_torch: bool = typer.Option(False, "--also-torch", help="Also measure the embedder in eager torch"),
    as_json: bool = vision_cli.JSON,
    verbose: bool = vision_cli.VERBOSE,
) -> None:
    """Images/s for detection and for embedding at batch 1 and 32 on a fixed image set, and peak memory."""
    vision_cli.quiet_logging(verbose)
    settings = load_settings()
    updates = {k: v for k, v in (("detector", detector_name), ("yolo_weights", yolo_weights)) if v}
    settings = settings.model_copy(update=updates)
    from core.machine import machine_info
    from vitrine.bench.vision import (
        bench_detector,
        bench_embedder,
        bench_images,
        bench_pipeline,
        peak_rss_mb,
        sample_photo_paths,
    )

    photos = bench_images(images)
    embedder, detector = vision_cli.build_models(settings)
    vision_cli.load_or_fail(detector)
    vision_cli.load_or_fail(embedder)
    report = {
        "images": len(photos),
        "image_set": "seeded crops (200-800 px) of " + ", ".join(p.name for p in sample_photo_paths()),
        "settings": vision_cli.vision_settings(settings),
        "detection": bench_detector(detector, photos),
        "embedding": [bench_embedder(embedder, photos)],
        "pipeline": bench_pipeline(detector, embedder, photos, **vision_cli.item_policy(settings)),
    }
    if also_torch and embedder.runtime != "torch":
        torch_embedder, _ = vision_cli.build_models(settings.model_copy(update={"use_onnx": False}), detector=False)
        report["embedding"].append(bench_embedder(torch_embedder, photos))
    report["peak_rss_mb"] = peak_rss_mb()
    report["machine"] = machine_info()  # last: names torch's thread count only if torch ran
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    m = report["machine"]
    typer.echo(f"{report['images']} images: {report['image_set']}")
    typer.echo(
        f"machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, torch {m['torch']}, "
        f"onnxruntime {m['onnxruntime']}, torch threads {m.get('torch_threads')}, "
        f"load average {m['load_average_1m']}"
    )
    typer.echo(f"{'stage':<8}{'model':<44}{'runtime':<13}{'batch':>6}{'images/s':>10}{'best':>8}")
    det = report["detection"]
    typer.echo(
        f"{'detect':<8}{det['name']:<44}{'-':<13}{det['batch']:>6}"
        f"{det['images_per_s']:>10.1f}{det['best_images_per_s']:>8.1f}"
    )
    for emb in report["embedding"]:
        for run in emb["runs"]:
            typer.echo(
                f"{'embed':<8}{emb['model_key']:<44}{emb['runtime']:<13}{run['batch']:>6}"
                f"{run['images_per_s']:>10.1f}{run['best_images_per_s']:>8.1f}"
            )
    pipe = report["pipeline"]
    typer.echo(
        f"{'ingest':<8}{'bytes->load->detect->items->embed':<44}{embedder.runtime:<13}{pipe['batch']:>6}"
        f"{pipe['images_per_s']:>10.1f}{pipe['best_images_per_s']:>8.1f}"
    )
    typer.echo("images/s: median of 3 timed passes over the set (after one warm-up batch); best: fastest pass")
    typer.echo(f"peak RSS: {report['peak_rss_mb']:.0f} MB")


@bench_app.command("stats")
def bench_stats(
    events: str = typer.Option("1000000,10000000", help="Comma-separated event counts"),
    as_json: bool = typer.Option(False, "--json", help="One JSON object with the figures and the machine"),
    daily: bool = typer.Option(True, "--daily/--no-daily", help="Also time the per-day series"),
    fresh: bool = typer.Option(False, "--fresh", help="Regenerate events even if already there"),
    cleanup: bool = typer.Option(False, "--cleanup", help="Delete the generated events afterwards"),
    source: str = typer.Option(
        "auto",
        help="auto: the rollup when exact (else raw events); "
        "raw: always aggregate raw events (the pre-rollup path, for comparison)",
    ),
) -> None:
    """Time loader (SQL aggregation in Postgres) + analysis for N synthetic interaction events."""
    from core.machine import machine_info
    from vitrine.bench.stats import time_stats

    try:
        sizes = [int(x.replace("_", "")) for x in events.split(",") if x.strip()]
    except ValueError:
        fail(f"--events must be comma-separated integers, got {events!r}")
    if source not in ("auto", "raw"):
        fail(f"--source must be auto or raw, got {source!r}")
    engine = database_engine()
    try:
        rows = time_stats(engine, sizes, daily=daily, fresh=fresh, cleanup=cleanup, source=source)
    finally:
        engine.dispose()
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "benchmark": "stats",
                    "goal": "10M events analysed in < 10 s",
                    "machine": machine_info(),
                    "results": rows,
                }
            )
        )
        return
    typer.echo(
        f"{'events':>12} {'users':>10} {'generate s':>11} {'load s':>8} {'analysis s':>11} "
        f"{'total s':>8} {'daily s':>8}  source"
    )
    for r in rows:
        gen = f"{r['generate_s']:.1f}" if r["generate_s"] is not None else "reused"
        dly = f"{r['daily_s']:.2f}" if r["daily_s"] is not None else "-"
        typer.echo(
            f"{r['events']:>12,} {r['users']:>10,} {gen:>11} {r['load_s']:>8.2f} {r['analysis_s']:>11.3f} "
            f"{r['total_s']:>8.2f} {dly:>8}  {r['source']}"
        )


# --- bench dashboard -----------------------------------------------------------------------


@bench_app.command("dashboard")
def bench_dashboard(
    events: str = typer.Option(
        "1000000,10000000",
        help="Comma-separated event counts: the `bench stats` experiments (generated first when missing)",
    ),
    tenant: str = typer.Option(None, "--tenant", "-t", help="Time this tenant's experiment instead (with --key)"),
    key: str = typer.Option(None, "--key", "-k", help="Experiment to time (with --tenant)"),
    as_json: bool = typer.Option(False, "--json", help="One JSON object with the figures and the machine"),
) -> None:
    """Time the experiment detail page (Streamlit AppTest, in process): cold live, cold from snapshot, warm; refresh.

    Deletes the experiment's result snapshot first (the cold live run stores a new one).
    """
    import os

    from core.machine import machine_info
    from core.settings import StackNotRunning
    from vitrine.bench.dashboard import time_experiment_page, warm_imports
    from vitrine.bench.stats import prepare

    if (tenant is None) != (key is None):
        fail("--tenant and --key go together")
    settings = load_settings()
    try:
        url = settings.database_url or settings.resolved().database_url
    except StackNotRunning as exc:
        fail(str(exc))
    if not settings.kafka_bootstrap and not settings.stack_file.exists():
        # The page reads Postgres only, but the dashboard's settings want a broker address too.
        os.environ.setdefault("VITRINE_KAFKA_BOOTSTRAP", "unused:9092")
    if tenant is not None:
        targets = [(tenant, key)]
    else:
        try:
            sizes = [int(x.replace("_", "")) for x in events.split(",") if x.strip()]
        except ValueError:
            fail(f"--events must be comma-separated integers, got {events!r}")
        engine = database_engine()
        try:
            targets = [prepare(engine, n, fresh=False)[:2] for n in sizes]
        finally:
            engine.dispose()
    warm_imports()
    load_before = os.getloadavg()
    try:
        rows = [time_experiment_page(url, t, k) for t, k in targets]
    except RuntimeError as exc:
        fail(str(exc))
    load_after = os.getloadavg()
    settings_used = {
        "results_max_age_s": settings.results_max_age_s,
        "cache_ttl_s": _report_ttl_s(),
        "page": "dashboards/pages/experiment.py",
        "runner": "streamlit.testing.v1.AppTest",
    }
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "benchmark": "dashboard",
                    "goal": "a page with 10M events loads in a few seconds",
                    "machine": machine_info(),
                    "load_average_before": list(load_before),
                    "load_average_after": list(load_after),
                    "settings": settings_used,
                    "results": rows,
                }
            )
        )
        return
    m = machine_info()
    typer.echo(
        f"machine: {m['cpu']}, {m['cores']} cores, {m['platform']}, Python {m['python']}; load average "
        f"(1/5/15 min) before {', '.join(f'{x:.2f}' for x in load_before)}, "
        f"after {', '.join(f'{x:.2f}' for x in load_after)}"
    )
    typer.echo(
        f"settings: snapshot max age {settings.results_max_age_s:g} s, cache TTL {_report_ttl_s()} s; "
        "cold = st.cache_data cleared, connection pool kept\n"
    )
    typer.echo(
        f"{'events':>12} {'users':>10} {'cold live s':>12} {'cold snapshot s':>16} {'warm s':>8} "
        f"{'refresh s':>10}  source"
    )
    for r in rows:
        typer.echo(
            f"{r['events']:>12,} {r['users']:>10,} {r['cold_live_s']:>12.2f} {r['cold_snapshot_s']:>16.2f} "
            f"{r['warm_s']:>8.2f} {r['refresh_s']:>10.2f}  {r['source']}"
        )


def _report_ttl_s() -> int:
    from dashboards.data import REPORT_TTL_S

    return REPORT_TTL_S


@bench_app.command("outage")
def bench_outage(
    products: int = typer.Option(1000, min=10, help="Products to post (1-3 images each)"),
    outage_s: float = typer.Option(60.0, min=1, help="How long Postgres stays stopped"),
    stop_after: float = typer.Option(0.1, min=0.0, max=0.9, help="Stop Postgres once this share is indexed"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Stop Postgres during an ingest (own Postgres and broker): lost, doubled, dead letters, recovery, API codes."""
    from vitrine.bench.outage import format_report, run_outage_bench

    setup_logging(verbose)
    try:
        r = run_outage_bench(load_settings(), products=products, outage_s=outage_s, stop_after=stop_after)
    except RuntimeError as exc:
        fail(str(exc))
    typer.echo(json.dumps(r) if as_json else format_report(r))


@bench_app.command("training")
def bench_training(
    dataset: str = typer.Option("fashion-mnist", help="fashion-mnist, or an ImageFolder (label or product folders)"),
    methods: str = typer.Option("supervised", help="Comma-separated: supervised,triplet,design,autoencoder"),
    finetune: bool = typer.Option(False, "--finetune", help="Fine-tune the backbone (supervised, triplet)"),
    train_sample: int = typer.Option(None, "--train-sample", min=20, help="Training images (default: all)"),
    test_sample: int = typer.Option(2000, "--test-sample", min=20, help="fashion-mnist: held-out t10k images"),
    holdout: float = typer.Option(0.2, min=0.05, max=0.5, help="ImageFolder: share of products held out"),
    seed: int = typer.Option(0, help="Seed of the samples, the split and the training"),
    epochs: int = typer.Option(None, min=1, help="Epochs (default: each method's own)"),
    bits: int = typer.Option(None, help="triplet: also learn 32, 48 or 64-bit codes"),
    workers: int = typer.Option(0, min=0, help="Fine-tuning: image decoding processes"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Train each method; print its held-out mAP@5/10, R@1/5/10 beside the pretrained model and raw pixels."""
    from vitrine.bench.training import format_table, run_training_bench
    from vitrine.cli.model_train import _progress_bar
    from vitrine.cli.vision import quiet_logging

    quiet_logging(verbose)
    settings = load_settings()
    chosen = [m.strip() for m in methods.split(",") if m.strip()]
    try:
        result = run_training_bench(
            dataset,
            chosen,
            data_dir=settings.data_dir,
            fashion_mnist_dir=settings.fashion_mnist_dir,
            finetune=finetune,
            train_sample=train_sample,
            test_sample=test_sample,
            holdout=holdout,
            seed=seed,
            epochs=epochs,
            bits=bits,
            workers=workers,
            stage=_progress_bar,
        )
    except ValueError as exc:  # TrainingError / DatasetError / a bad combination of options
        fail(str(exc))
    typer.echo(json.dumps(result, indent=2) if as_json else format_table(result))


@bench_app.command("reembed")
def bench_reembed(
    items: int = typer.Option(10_000, min=10, help="Stored vectors of the synthetic tenant"),
    seed: int = typer.Option(0, help="Seed of the vectors, the head and the shoppers"),
    shoppers: int = typer.Option(10, min=1, help="Closed-loop shoppers querying meanwhile"),
    think: float = typer.Option(1.0, min=0, help="Mean think time between a shopper's requests (s)"),
    baseline: float = typer.Option(20.0, min=1, help="Seconds of serving measured before the re-embed"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Deploy a head on N stored vectors (the workers' background re-embed) while shoppers query; time both."""
    from vitrine.bench.reembed import format_report, run_reembed_bench

    setup_logging(verbose)
    settings = load_settings()
    result = run_reembed_bench(
        items,
        data_dir=settings.data_dir,
        seed=seed,
        shoppers=shoppers,
        think_s=think,
        baseline_s=baseline,
        page=settings.reembed_page,
        pause_s=settings.reembed_pause_s,
    )
    typer.echo(json.dumps(result, indent=2) if as_json else format_report(result))


@bench_app.command("reembed-tower")
def bench_reembed_tower(
    products: int = typer.Option(300, min=10, help="Products of the tenant (1-3 images each) to re-embed"),
    seed: int = typer.Option(0, help="Seed of the images and the catalog"),
    interval: float = typer.Option(1.0, min=0.05, help="One live catalog event every this many seconds"),
    baseline: float = typer.Option(30.0, min=1, help="Seconds of live events timed before the deployment"),
    duty: float = typer.Option(None, min=0.01, max=1.0, help="VITRINE_REEMBED_IMAGE_DUTY for this run"),
    page: int = typer.Option(None, min=1, help="VITRINE_REEMBED_IMAGE_PAGE for this run"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Deploy a fine-tuned tower on the running worker (images fetched again and cropped) while catalog events
    keep coming; time the re-embed and the live events before and during it."""
    from vitrine.bench.reembed_tower import format_report, run_tower_reembed_bench

    setup_logging(verbose)
    settings = load_settings()
    changes = {"reembed_image_duty": duty, "reembed_image_page": page}
    settings = settings.model_copy(update={k: v for k, v in changes.items() if v is not None})
    result = run_tower_reembed_bench(settings, products=products, seed=seed, interval_s=interval, baseline_s=baseline)
    typer.echo(json.dumps(result, indent=2) if as_json else format_report(result))


@bench_app.command("detector")
def bench_detector(
    classes: int = typer.Option(8, "--classes", min=1, help="Demo catalog categories taught as classes"),
    add_class: bool = typer.Option(True, "--add-class/--no-add-class", help="Then teach one more and fine-tune"),
    epochs: int = typer.Option(30, "--epochs", min=1, max=500),
    add_epochs: int = typer.Option(None, "--add-epochs", min=1, max=500, help="Fine-tuning epochs (default --epochs)"),
    imgsz: int = typer.Option(320, "--imgsz", min=64, max=1280),
    train_scenes: int = typer.Option(600, "--train-scenes", min=10),
    test_scenes: int = typer.Option(200, "--test-scenes", min=10),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present) | cpu | 0"),
    seed: int = typer.Option(0, "--seed"),
    work_dir: str = typer.Option(None, "--work-dir", help="Keep label sets, scenes and students here"),
    reuse: bool = typer.Option(
        False, "--reuse", help="Students in --work-dir trained on the same scenes and settings are not trained again"
    ),
    background_class: bool = typer.Option(
        False, "--background-class", help="The class head also learns the YOLO's false boxes (docs/detector.md)"
    ),
    head_embedder: str = typer.Option(
        "efficientnet-lite0",
        "--head-embedder",
        help="What the class head is fitted over: efficientnet-lite0 | configured (VITRINE_EMBEDDER, e.g. CLIP "
        "with VITRINE_CLIP_PRETRAINED=a local weights file)",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Teach a student detector the demo catalog's classes offline; held-out mAP50 per class, forgetting, speed."""
    from pathlib import Path

    from vitrine.bench.detector import format_table, run_detector_bench

    setup_logging(verbose)
    if reuse and not work_dir:
        fail("--reuse needs --work-dir (the folder whose students to reuse)")
    if head_embedder not in ("efficientnet-lite0", "configured"):
        fail(f"--head-embedder must be efficientnet-lite0 or configured, not {head_embedder!r}", USAGE)
    settings = load_settings()
    embedder = None
    if head_embedder == "configured":
        from vision.components import build_embedder
        from vision.model import ModelLoadError

        embedder = build_embedder(settings)
        try:  # weights that cannot load fail here, in seconds, not after the students have trained
            embedder.load()
        except ModelLoadError as exc:
            fail(f"--head-embedder configured: {exc}")
    try:
        result = run_detector_bench(
            data_dir=settings.data_dir,
            classes=classes,
            add_class=add_class,
            epochs=epochs,
            add_epochs=add_epochs,
            imgsz=imgsz,
            train_scenes=train_scenes,
            test_scenes=test_scenes,
            seed=seed,
            device=device,
            work_dir=Path(work_dir) if work_dir else None,
            reuse=reuse,
            background_class=background_class,
            embedder=embedder,
        )
    except (ValueError, OSError, RuntimeError) as exc:  # no catalog, too few categories, a student error
        fail(str(exc))
    typer.echo(json.dumps(result, default=str) if as_json else format_table(result))


@bench_app.command("shop-the-look")
def bench_shop_the_look(
    detector: list[str] = typer.Option(
        [], "--detector", help="A student's weights (student.pt); repeatable. The configured detector always runs"
    ),
    scenes: int = typer.Option(200, "--scenes", min=1),
    k: int = typer.Option(3, "--products-per-scene", min=1, max=6),
    top: int = typer.Option(5, "--top", min=1, max=50),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Composite scenes of catalog products through POST /v1/search/by-image: each product in its item's top 5?"""
    from pathlib import Path

    from vitrine.bench.shop_the_look import format_table, run_shop_the_look

    setup_logging(verbose)
    settings = load_settings()
    missing = [d for d in detector if not Path(d).is_file()]
    if missing:
        fail(f"no such detector weights: {', '.join(missing)}")
    try:
        result = run_shop_the_look(
            settings, detectors=[Path(d) for d in detector], scenes=scenes, k=k, top=top, seed=seed
        )
    except (ValueError, OSError, RuntimeError) as exc:
        fail(str(exc))
    typer.echo(json.dumps(result, default=str) if as_json else format_table(result))
