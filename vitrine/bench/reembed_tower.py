"""`vitrine bench reembed-tower`: a fine-tuned tower re-embedded by the running worker while catalog events keep coming.

On the local stack (embedded Kafka and Postgres, a real api and worker), a tenant's N products are indexed
through the webhook; then, one new product every `interval_s`, live catalog events are timed (post -> the
worker's `indexed_at`) for `baseline_s` alone. A tower is deployed for the tenant and the worker's re-embed
thread runs it (db/deployments.py `needs_images`: every item's image fetched again from the image server,
cropped at its box, run through the tower, written page by page) while the same live events go on; every
new product also gets the tower's vectors in its own transaction. The tower is the deployed embedder's
EfficientNet-Lite0 graph repackaged as a tower artefact: the compute of a fine-tuned EfficientNet-Lite0
tower (fine-tuning changes weights, not the graph), not its quality.
"""

from __future__ import annotations

import json
import statistics
import time
from contextlib import ExitStack
from datetime import datetime

from kafka import KafkaConsumer
from sqlalchemy import text

from core.settings import Settings
from vitrine.bench.ingest import _indexed_consumer, _send_and_wait, build_catalog, make_images
from vitrine.client import CatalogClient
from vitrine.image_server import ImageServer
from vitrine.local_system import start_local_system

TENANT = "bench-ingest"  # build_catalog's tenant
GOAL_LATENCY_RATIO = 2.0


def run_tower_reembed_bench(
    settings: Settings,
    *,
    products: int,
    seed: int = 0,
    interval_s: float = 1.0,
    baseline_s: float = 30.0,
    timeout_s: float = 3600.0,
) -> dict:
    """Index the catalog, time live events alone, deploy the tower and time them during its re-embed."""
    from core.machine import machine_info
    from db.deployments import deploy_trained
    from db.trained_models import finish_job, start_job
    from streams.reembed import SETTLE_MARGIN_S
    from vision.components import build_embedder
    from vision.trained import write_artefact

    work = settings.data_dir / "bench-reembed-tower"
    load = [_load()]
    with ExitStack() as stack:
        names = make_images(work / "images", products * 2 + 400, seed=seed)
        server = stack.enter_context(ImageServer(work / "images"))
        env = {
            "VITRINE_REEMBED_IMAGE_DUTY": str(settings.reembed_image_duty),
            "VITRINE_REEMBED_IMAGE_PAGE": str(settings.reembed_image_page),
        }
        system = start_local_system(settings, stack, name="bench-reembed-tower", extra_env=env)
        creds = system.fresh_tenant(TENANT, "Tower re-embed benchmark")
        client = CatalogClient(system.base_url, creds.tenant_id, creds.webhook_secret)
        stack.callback(client.close)
        consumer = _indexed_consumer(system.settings)
        stack.callback(consumer.close)

        catalog = build_catalog(products, names[: products * 2], server.base_url, version=1, tag="t", seed=seed)
        indexed = _send_and_wait(client, consumer, catalog, timeout_s)
        live_names = iter(names[products * 2 :] * 100)
        alone = _summary(
            [lat for _, lat in _live_events(client, consumer, server.base_url, live_names, interval_s,
                                            until=_after(baseline_s))]
        )  # fmt: skip

        backbone = build_embedder(settings)
        backbone.load()  # its ONNX graph, cached: the tower's compute
        card = {"name": "bench-tower", "method": "finetune", "dim": backbone.dim,
                "input": {"size": backbone.input_size, "preprocessing": "imagenet"}}  # fmt: skip
        path = write_artefact(work / "models", card, onnx=backbone.onnx_path.read_bytes())
        with system.sessions.begin() as s:
            job = start_job(s, TENANT, method="triplet", finetune=True, params={"bench": "tower"})
            finish_job(s, TENANT, job.job_id, model_key=path.stem, artefact_path=str(path), card={})
            dep, _ = deploy_trained(s, TENANT, path.stem, embedder_key=backbone.model_key)
            total = dep.items_total
        load.append(_load())

        def ready() -> bool:
            return _deployment(system, path.stem)["status"] != "embedding"

        deadline = time.monotonic() + timeout_s
        deployed_at = time.time()
        during = _live_events(
            client,
            consumer,
            server.base_url,
            live_names,
            interval_s,
            until=lambda: ready() or time.monotonic() > deadline,
        )
        load.append(_load())
        dep = _deployment(system, path.stem)
        scan_end = dep["scan_done_at"].timestamp() if dep["scan_done_at"] else time.time()
        scanning = _summary([lat for at, lat in during if deployed_at <= at < scan_end])
        with system.sessions() as s:
            live_tower = s.scalar(
                text("SELECT count(*) FROM items i JOIN products p ON p.id = i.product_id WHERE i.model = :k "
                     "AND p.external_id LIKE 'live-%'"),
                {"k": path.stem},
            )  # fmt: skip
    scan_s = (dep["scan_done_at"] - dep["created_at"]).total_seconds() if dep["scan_done_at"] else None
    ready_s = (dep["ready_at"] - dep["created_at"]).total_seconds() if dep["ready_at"] else None
    ratio = round(scanning["p99_s"] / alone["p99_s"], 2) if alone["p99_s"] and scanning["p99_s"] else None
    return {
        "benchmark": "reembed-tower",
        "machine": machine_info(),
        "load_average_1m": load,
        "settings": {
            "products": products,
            "seed": seed,
            "tower": f"{backbone.model_key}'s graph as a {backbone.dim}-d tower (onnxruntime, 1 thread)",
            "detector": settings.detector,
            "image_page": settings.reembed_image_page,
            "image_duty": settings.reembed_image_duty,
            "live_interval_s": interval_s,
            "baseline_s": baseline_s,
            "settle_s": settings.deployment_cache_ttl_s + SETTLE_MARGIN_S,
        },
        # Items at the deploy: the catalog's and the live products' of the baseline phase.
        "catalog": {
            "products": products,
            "items": total,
            "indexed_s": indexed["elapsed_s"],
            "live_products_before": alone["events"],
        },
        "deployment": {
            "status": dep["status"],
            "items_written": dep["items_written"],
            "items_failed": dep["items_failed"],
            "scan_s": round(scan_s, 1) if scan_s else None,
            "ready_s": round(ready_s, 1) if ready_s else None,
            "items_scanned": dep["items_done"],
            "items_per_s": round(dep["items_done"] / scan_s, 1) if scan_s else None,
            "hours_per_100k": round(scan_s / dep["items_done"] * 100_000 / 3600, 2) if scan_s else None,
        },
        "live_alone": alone,
        "live_during_scan": scanning,
        "live_until_ready": _summary([lat for _, lat in during]),
        "live_products_with_tower_vectors": live_tower,
        "p99_ratio": ratio,
        "goals": {"live_p99_degraded_under_2x": ratio is not None and ratio < GOAL_LATENCY_RATIO},
    }


def format_report(r: dict) -> str:
    """The figures as a few readable lines."""
    m, s, d, a, b = r["machine"], r["settings"], r["deployment"], r["live_alone"], r["live_during_scan"]
    return "\n".join(
        [
            f"machine: {m['cpu']}, {m['usable_cpus']} usable cpus, load (1 min) before / at deploy / after: "
            f"{r['load_average_1m']}",
            f"settings: {s}",
            f"catalog: {r['catalog']['products']:,} products indexed in {r['catalog']['indexed_s']} s; "
            f"{r['catalog']['items']:,} items at the deploy (with the {r['catalog']['live_products_before']} live "
            "products of the baseline)",
            f"tower re-embed: {d['status']}, {d['items_written']:,} items written by it ({d['items_failed']} failed); "
            f"scan of {d['items_scanned']:,} items {d['scan_s']} s = {d['items_per_s']} items/s "
            f"({d['hours_per_100k']} h per 100k items); ready after "
            f"{d['ready_s']} s (the sweep waits {s['settle_s']:g} s, then the HNSW build)",
            f"live events, one per {s['live_interval_s']:g} s: alone p50 {a['p50_s']} s p99 {a['p99_s']} s "
            f"({a['events']}); during the scan p50 {b['p50_s']} s p99 {b['p99_s']} s ({b['events']}); p99 "
            f"x{r['p99_ratio']}; live products with tower vectors: {r['live_products_with_tower_vectors']}",
            f"goal live p99 degraded < 2x: {'met' if r['goals']['live_p99_degraded_under_2x'] else 'MISSED'}",
        ]
    )


def _after(seconds: float):
    deadline = time.monotonic() + seconds
    return lambda: time.monotonic() > deadline


def _live_events(client: CatalogClient, consumer: KafkaConsumer, base_url: str, names, interval_s: float, *, until):
    """Post one new product every `interval_s` until `until()`, then wait for their notices: [(posted at, latency
    in s)]; RuntimeError if one is not indexed within 300 s."""
    posted: dict[str, float] = {}
    latencies: list[tuple[float, float]] = []

    def drain(timeout_ms: int) -> None:
        for records in consumer.poll(timeout_ms=timeout_ms).values():
            for r in records:
                notice = json.loads(r.value)
                if notice["event_id"] in posted:
                    done = datetime.fromisoformat(notice["indexed_at"]).timestamp()
                    at = posted.pop(notice["event_id"])
                    latencies.append((at, done - at))

    while not until():
        pid = f"live-{time.time_ns()}"
        event = {"event_id": pid, "tenant_id": TENANT, "type": "product.upserted",
                 "product": {"id": pid, "version": 1, "title": pid, "category": "live",
                             "image_urls": [f"{base_url}/{next(names)}"]}}  # fmt: skip
        posted[pid] = time.time()
        resp = client.send([event])
        if resp.status_code != 202:
            raise RuntimeError(f"webhook answered {resp.status_code}: {resp.text[:300]}")
        next_at = time.monotonic() + interval_s
        while (left := next_at - time.monotonic()) > 0:
            drain(max(1, int(left * 1000)))
    deadline = time.monotonic() + 300
    while posted and time.monotonic() < deadline:
        drain(500)
    if posted:
        raise RuntimeError(f"{len(posted)} live event(s) were not indexed within 300 s")
    return latencies


def _summary(latencies: list[float]) -> dict:
    """Count, p50, p99 (nearest rank) and max of latencies in seconds."""
    ordered = sorted(latencies)
    if not ordered:
        return {"events": 0, "p50_s": None, "p99_s": None, "max_s": None}
    return {
        "events": len(ordered),
        "p50_s": round(statistics.median(ordered), 3),
        "p99_s": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 3),
        "max_s": round(ordered[-1], 3),
    }


def _deployment(system, key: str) -> dict:
    with system.sessions() as s:
        row = s.execute(
            text("SELECT status, items_done, items_written, items_failed, created_at, scan_done_at, ready_at "
                 "FROM model_deployments WHERE model_key = :k"),
            {"k": key},
        ).one()  # fmt: skip
    return dict(row._mapping)


def _load() -> float:
    import os

    return round(os.getloadavg()[0], 2)
