"""`vitrine bench shop-the-look`: composite scenes of three catalog products through POST /v1/search/by-image.

The demo catalog is ingested into a fresh tenant of a running vitrine (api + worker on the embedded
stack). Each scene pastes three products' cut-outs (different categories where possible) onto a new
background, with little occlusion. For every placed product: the detected item whose box overlaps
its true box most (IoU >= 0.5) must list it in its top 5 ("hit"); a product no item box matches is
a miss of the detector. Run once with the configured detector (the whole image is the only item
unless it detects more) and once per student artefact given with --detector, activated for the tenant;
the queries wait until the worker has re-detected the catalog with it (that time is reported).

The pasted products come from the catalog's own photos (moved, scaled, turned and relit on another
background), so this measures finding the products of a photo, not recognising a product in a
photo the catalog never had.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import numpy as np

from core.machine import machine_info
from core.settings import Settings
from vision.items import iou

log = logging.getLogger(__name__)

TENANT, NAME = "bench-look", "Shop the look bench"
IOU_MATCH = 0.5


def score_answer(placed: list[tuple[str, tuple]], items: list[dict], top: int) -> dict:
    """Per placed product: was an item box found for it (IoU >= 0.5) and is the product in that item's top `top`."""
    out = {"placed": len(placed), "located": 0, "hits": 0, "any_item_hits": 0}
    detected = [it for it in items if it["label"] != "image"]  # the whole-image item is not a detection
    for product, box in placed:
        ids = [[p["product_id"] for p in it["products"][:top]] for it in items]
        out["any_item_hits"] += any(product in row for row in ids)
        best = max(detected, key=lambda it: iou(tuple(it["box"]), box.box), default=None)
        if best is None or iou(tuple(best["box"]), box.box) < IOU_MATCH:
            continue
        out["located"] += 1
        out["hits"] += product in [p["product_id"] for p in best["products"][:top]]
    return out


def run_shop_the_look(
    settings: Settings,
    *,
    detectors: list[Path],
    scenes: int = 200,
    k: int = 3,
    top: int = 5,
    seed: int = 0,
    timeout_s: float = 900,
) -> dict:
    """Ingest the demo catalog, then query `scenes` composite scenes per detector; hit rates per detector."""
    from db import detectors as registry
    from db import trained_models
    from training.scenes import cutouts_from_photos, demo_catalog_photos, shop_the_look_scenes
    from vision.cutout import cut_out
    from vitrine.demo import ingest_catalog
    from vitrine.demo_catalog import build_demo_catalog, catalog_events
    from vitrine.image_server import ImageServer
    from vitrine.local_system import start_local_system

    started = time.perf_counter()
    catalog = build_demo_catalog(settings.data_dir / "demo" / "catalog", data_dir=settings.data_dir, seed=0)
    cutouts, _ = cutouts_from_photos(demo_catalog_photos(catalog.out_dir), cut=cut_out)
    looks = shop_the_look_scenes(cutouts, scenes, np.random.default_rng(seed), size=640, k=k)
    bodies = []
    for image, placed in looks:
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=90)
        bodies.append((buf.getvalue(), placed))
    result: dict = {"settings": {"scenes": scenes, "products_per_scene": k, "top": top, "seed": seed}, "runs": []}
    with ExitStack() as stack:
        system = start_local_system(settings, stack, name="bench-shop-the-look")
        images = stack.enter_context(ImageServer(catalog.images_dir))
        creds = system.fresh_tenant(TENANT, NAME)
        with contextlib.redirect_stdout(sys.stderr):  # its progress bar; stdout carries the table or the JSON
            ingest_catalog(system, creds, catalog_events(catalog, creds.tenant_id, images.base_url), timeout_s)
        client = stack.enter_context(httpx.Client(base_url=system.base_url, timeout=60))
        for weights in [None, *detectors]:
            name = "configured detector" if weights is None else str(weights)
            with system.sessions.begin() as s:
                if weights is not None:
                    key = f"bench-{Path(weights).parent.name or Path(weights).stem}"
                    job = trained_models.start_job(s, TENANT, method="detector", finetune=False, params={})
                    trained_models.finish_job(
                        s, TENANT, job.job_id, model_key=key, artefact_path=str(Path(weights).resolve()), card={}
                    )
                    registry.activate_detector(s, TENANT, key)
            # Activation re-detects the catalog in the worker: query a settled catalog, and say how long it took.
            redetect_s = _wait_redetected(system, timeout_s) if weights is not None else None
            time.sleep(settings.lookup_cache_ttl_s + 0.5)  # the api's detector lookup cache
            totals = {"placed": 0, "located": 0, "hits": 0, "any_item_hits": 0}
            known = {"placed": 0, "located": 0, "hits": 0, "any_item_hits": 0}  # products of the student's classes
            classes = _classes(weights)
            latencies, errors = [], 0
            for body, placed in bodies:
                t0 = time.perf_counter()
                resp = client.post(
                    "/v1/search/by-image",
                    headers={"X-Vitrine-Key": creds.storefront_key},
                    files={"image": ("look.jpg", body, "image/jpeg")},
                    params={"limit": top},
                )
                latencies.append(time.perf_counter() - t0)
                if resp.status_code != 200:
                    errors += 1
                    log.warning("by-image answered %s: %s", resp.status_code, resp.text[:200])
                    continue
                items = resp.json()["items"]
                for key_, value in score_answer(placed, items, top).items():
                    totals[key_] += value
                if classes:
                    for key_, value in score_answer([p for p in placed if p[1].label in classes], items, top).items():
                        known[key_] += value
            n = max(1, totals["placed"])
            result["runs"].append(
                {
                    "detector": name,
                    **totals,
                    "hit_rate": round(totals["hits"] / n, 4),
                    "located_rate": round(totals["located"] / n, 4),
                    "any_item_hit_rate": round(totals["any_item_hits"] / n, 4),
                    "known_classes": sorted(classes),
                    "known_placed": known["placed"],
                    "known_hit_rate": round(known["hits"] / max(1, known["placed"]), 4) if classes else None,
                    "known_located_rate": round(known["located"] / max(1, known["placed"]), 4) if classes else None,
                    "errors": errors,
                    "redetect_s": redetect_s,
                    "p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 1),
                    "p99_ms": round(float(np.percentile(latencies, 99)) * 1000, 1),
                }
            )
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["machine"] = machine_info()
    return result


def _classes(weights: Path | None) -> set[str]:
    """The classes a student's card names (products of other categories it is not meant to find)."""
    if weights is None:
        return set()
    import json

    card = Path(weights).parent / "card.json"
    return set(json.loads(card.read_text()).get("classes") or []) if card.is_file() else set()


def _wait_redetected(system, timeout_s: float) -> float:
    """Seconds until the worker has re-detected every image of the tenant (after an activation)."""
    from db.detectors import redetect_pending

    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        if system.worker.poll() is not None:
            raise RuntimeError(f"worker exited with {system.worker.returncode}; see {system.logs / 'worker.log'}")
        with system.sessions() as s:
            left = redetect_pending(s, TENANT)
        if left == 0:
            return round(time.perf_counter() - started, 1)
        time.sleep(1.0)
    raise RuntimeError(f"{left} images still waiting for re-detection after {timeout_s:.0f} s")


def format_table(r: dict) -> str:
    s = r["settings"]
    lines = [
        f"shop the look: {s['scenes']} composite scenes of {s['products_per_scene']} catalog products each, "
        f"POST /v1/search/by-image, a hit = the product in the top {s['top']} of the item detected on it (IoU >= 0.5)",
        f"{'detector':<48} {'hit rate':>8} {'located':>8} {'any item':>8} {'p50 ms':>7} {'p99 ms':>7} {'re-detect':>9}",
    ]
    for run in r["runs"]:
        lines.append(
            f"{run['detector'][-48:]:<48} {run['hit_rate']:>8.3f} {run['located_rate']:>8.3f} "
            f"{run['any_item_hit_rate']:>8.3f} {run['p50_ms']:>7.0f} {run['p99_ms']:>7.0f} "
            f"{'-' if run['redetect_s'] is None else str(run['redetect_s']) + ' s':>9}"
        )
    for run in r["runs"]:
        if run.get("known_classes"):
            lines.append(
                f"{run['detector'][-48:]}: on the {run['known_placed']} placed products of its "
                f"{len(run['known_classes'])} classes: hit rate {run['known_hit_rate']:.3f}, "
                f"located {run['known_located_rate']:.3f}"
            )
    m = r["machine"]
    lines.append(
        f"machine: {m.get('cpu')}, {m.get('cores')} cores, load {m.get('load_average_1m')} "
        f"(api, worker, Postgres and this client on the same cores); whole run {r['seconds']:.0f} s"
    )
    return "\n".join(lines)
