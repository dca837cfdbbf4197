"""`vitrine bench reembed`: a background re-embed of N stored vectors while shoppers keep querying, in a Postgres
of its own.

Runs exactly what the workers run for a deployment (db/deployments.py through streams/reembed.py): read the
stored 1280-d backbone vectors page by page, apply a head, write the 128-d vectors, sweep, build the HNSW index
concurrently, mark ready. Meanwhile a separate process (as the API is) plays closed-loop shoppers: each sends the
visual arm's kNN query (db.vector_queries.similar_products on the backbone's HNSW index), waits for the answer,
thinks (exponential, mean `think_s`) and repeats. Their latency is measured for `baseline_s` before the re-embed
and for the whole re-embed: the ratio of the p99s is the cost of re-embedding while serving. The stored vectors
are random unit vectors and the head's weights seeded random: this measures speed, not quality.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from sqlalchemy import text

from core.machine import machine_info
from db.deployments import deploy_trained
from db.embedded import EmbeddedPostgres
from db.migrate import upgrade
from db.session import create_db_engine, session_factory
from db.tenants import create_tenant
from db.trained_models import finish_job, start_job
from db.vector_index import EF_CONSTRUCTION, ensure_vector_index
from db.vector_queries import similar_products
from streams.reembed import ModelCache, Reembedder
from vision.trained import write_artefact

BACKBONE_KEY = "efficientnet-lite0@imagenet1k-0.1.0"
GOAL_SECONDS_100K = 120.0
GOAL_P99_RATIO = 2.0
REQUEST_IDS = 1000  # shoppers view these products (a fixed, warmed set, as in `bench serve`)


def run_reembed_bench(
    items: int,
    *,
    data_dir: Path,
    seed: int = 0,
    shoppers: int = 10,
    think_s: float = 1.0,
    baseline_s: float = 20.0,
    page: int = 2000,
    pause_s: float = 0.05,
) -> dict:
    """Load the catalog, measure serving alone, then during a full deployment; one JSON-able object of figures."""
    with tempfile.TemporaryDirectory(prefix="vitrine-reembed-") as tmp, EmbeddedPostgres(Path(tmp) / "pg") as pg:
        upgrade(pg.url)
        engine = create_db_engine(pg.url)
        sessions = session_factory(engine)
        try:
            started = time.perf_counter()
            with sessions.begin() as s:
                create_tenant(s, "Bench", "bench")
                _synthetic_catalog(s, items, seed)
            load_s = time.perf_counter() - started
            started = time.perf_counter()
            with engine.begin() as conn:
                conn.execute(text("SET LOCAL maintenance_work_mem = '1GB'"))
                ensure_vector_index(conn, BACKBONE_KEY, 1280)
            backbone_index_s = time.perf_counter() - started
            with sessions.begin() as s:
                key = _ready_model(s, Path(tmp), seed)
            alone = _shoppers(pg.url, items, shoppers, think_s, seed, duration_s=baseline_s)
            with sessions.begin() as s:
                deploy_trained(s, "bench", key, embedder_key=BACKBONE_KEY)
            runner = Reembedder(
                engine, sessions, ModelCache(data_dir / "models"), page=page, pause_s=pause_s, settle_s=0
            )
            with _ShoppersInBackground(pg.url, items, shoppers, think_s, seed) as during:
                started = time.perf_counter()
                runner.run_until_idle()
                seconds = time.perf_counter() - started
            with sessions() as s:
                written = s.scalar(text("SELECT count(*) FROM items WHERE model = :k"), {"k": key})
                status = s.scalar(text("SELECT status FROM model_deployments WHERE model_key = :k"), {"k": key})
        finally:
            engine.dispose()
    before, meanwhile = _summary(alone, baseline_s), _summary(during.latencies, seconds)
    ratio = round(meanwhile["p99_ms"] / before["p99_ms"], 2) if before["p99_ms"] and meanwhile["p99_ms"] else None
    return {
        "benchmark": "reembed",
        "settings": {"items": items, "source": f"{BACKBONE_KEY} (1280-d, random unit vectors)", "seed": seed,
                     "head": "1280 -> 1024 -> 128 (numpy)",
                     "index": f"HNSW halfvec(128), m 16, ef_construction {EF_CONSTRUCTION}, built CONCURRENTLY",
                     "page": page, "pause_s": pause_s, "shoppers": shoppers, "think_s": think_s,
                     "baseline_s": baseline_s,
                     "shopper_query": "similar_products on the backbone's HNSW index (limit 10), from a process of "
                                      "its own, as the API's"},
        "machine": machine_info(),
        "load_s": round(load_s, 1),
        "backbone_index_s": round(backbone_index_s, 1),
        "status": status,
        "items": written,
        "seconds": round(seconds, 2),
        "items_per_s": round(written / seconds, 1) if seconds else None,
        "seconds_per_10k": round(seconds / written * 10_000, 2) if written else None,
        "serving_alone": before,
        "serving_during": meanwhile,
        "p99_ratio": ratio,
        "goals": {
            "seconds_per_100k": round(seconds / written * 100_000, 1) if written else None,
            "under_2_min_per_100k": bool(written) and seconds / written * 100_000 < GOAL_SECONDS_100K,
            "p99_degraded_under_2x": ratio is not None and ratio < GOAL_P99_RATIO,
        },
    }  # fmt: skip


def format_report(r: dict) -> str:
    """The figures as a few readable lines."""
    m, g, a, d = r["machine"], r["goals"], r["serving_alone"], r["serving_during"]
    return "\n".join(
        [
            f"machine: {m['cpu']}, {m['usable_cpus']} usable cpus, load {m['load_average_1m']}",
            f"settings: {r['settings']}",
            f"catalog: {r['settings']['items']:,} vectors loaded in {r['load_s']} s, backbone HNSW in "
            f"{r['backbone_index_s']} s",
            f"re-embed: {r['items']:,} vectors in {r['seconds']} s ({r['items_per_s']:,} items/s, "
            f"{r['seconds_per_10k']} s per 10k; read + head + write + sweep + index), deployment {r['status']}",
            f"serving, {r['settings']['shoppers']} shoppers: alone p50 {a['p50_ms']} ms p99 {a['p99_ms']} ms "
            f"({a['requests']} requests); during the re-embed p50 {d['p50_ms']} ms p99 {d['p99_ms']} ms "
            f"({d['requests']} requests); p99 x{r['p99_ratio']}",
            f"goal 100k in < 2 min: {g['seconds_per_100k']} s per 100k -> "
            f"{'met' if g['under_2_min_per_100k'] else 'MISSED'}; goal p99 degraded < 2x: "
            f"{'met' if g['p99_degraded_under_2x'] else 'MISSED'}",
        ]
    )


def _summary(latencies: list[float], elapsed_s: float) -> dict:
    from vitrine.bench.serve import latency_summary

    out = latency_summary(latencies, elapsed_s)
    return {k: out[k] for k in ("requests", "qps", "p50_ms", "p99_ms", "max_ms")}


def _shopper_process(url: str, items: int, shoppers: int, think_s: float, seed: int, duration_s, stop, ready) -> list:
    """Closed-loop shoppers in threads of this process until `duration_s` passed or `stop` is set."""
    engine = create_db_engine(url, pool_size=shoppers)
    sessions = session_factory(engine)
    pids = [f"p{i}" for i in random.Random(seed).sample(range(1, items + 1), min(REQUEST_IDS, items))]
    with sessions() as s:  # every request's pages warm before the measured part starts (as bench serve does)
        for pid in pids:
            similar_products(s, tenant_id="bench", external_id=pid, model_key=BACKBONE_KEY, dim=1280, limit=10)
    ready()
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + (duration_s if duration_s is not None else 1e9)

    def shopper(i: int) -> None:
        rng = random.Random(seed * 1000 + i)
        while time.monotonic() < deadline and not stop.is_set():
            pid = rng.choice(pids)
            t0 = time.perf_counter()
            with sessions() as s:
                similar_products(s, tenant_id="bench", external_id=pid, model_key=BACKBONE_KEY, dim=1280, limit=10)
            with lock:
                latencies.append(time.perf_counter() - t0)
            stop.wait(rng.expovariate(1 / think_s) if think_s > 0 else 0)

    threads = [threading.Thread(target=shopper, args=(i,)) for i in range(shoppers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    engine.dispose()
    return latencies


def _shoppers(url: str, items: int, shoppers: int, think_s: float, seed: int, *, duration_s: float) -> list[float]:
    with _ShoppersInBackground(url, items, shoppers, think_s, seed, duration_s=duration_s) as run:
        run.process.wait(timeout=duration_s + 900)
    return run.latencies


class _ShoppersInBackground:
    """The shoppers in a process of their own (`python -m vitrine.bench.reembed`, as the API is one): started on
    enter once warm, stopped on exit (its stdin closed); `latencies` filled after exit.

    A plain child process rather than multiprocessing's spawn, which re-imports the parent's `__main__`.
    """

    def __init__(self, url, items, shoppers, think_s, seed, *, duration_s: float | None = None):
        args = [url, str(items), str(shoppers), str(think_s), str(seed), "" if duration_s is None else str(duration_s)]
        self.command = [sys.executable, "-m", "vitrine.bench.reembed", *args]
        self.latencies: list[float] = []

    def __enter__(self):
        self.process = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self.process.stdout.readline().strip() != "ready":
            self.process.kill()
            raise RuntimeError(f"the shopper process did not start (exit {self.process.wait()})")
        return self

    def __exit__(self, *exc):
        if not self.process.stdin.closed:
            self.process.stdin.close()  # the child stops at EOF on its stdin
        out = self.process.stdout.read()
        self.process.wait(timeout=300)
        self.latencies = json.loads(out or "[]")


def _child(argv: list[str]) -> None:
    """The shopper process's entry point: prints "ready" once warm, then the latencies as JSON at the end."""
    url, items, shoppers, think_s, seed, duration = argv
    stop = threading.Event()

    def watch_stdin() -> None:
        sys.stdin.read()  # returns at EOF: the parent closed our stdin
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()

    def ready() -> None:
        print("ready", flush=True)

    latencies = _shopper_process(
        url, int(items), int(shoppers), float(think_s), int(seed), float(duration) if duration else None, stop, ready
    )
    print(json.dumps(latencies), flush=True)


def _ready_model(session, directory: Path, seed: int) -> str:
    """A head artefact (seeded random weights) registered as the tenant's ready model; returns its key."""
    path = _head_artefact(directory, seed)
    job = start_job(session, "bench", method="supervised", finetune=False, params={})
    finish_job(session, "bench", job.job_id, model_key=path.stem, artefact_path=str(path), card={})
    return path.stem


def _synthetic_catalog(session, items: int, seed: int) -> None:
    session.execute(text("SELECT setseed(:s)"), {"s": (seed % 1000) / 1000})
    session.execute(
        text("""INSERT INTO products (tenant_id, external_id, version, title, category, in_stock, attributes, deleted)
                SELECT 'bench', 'p' || g, 1, 'p' || g, 'c' || (g % 20), true, '{}', false
                FROM generate_series(1, :n) g"""),
        {"n": items},
    )
    session.execute(
        text("""INSERT INTO product_images (tenant_id, product_id, url, position, status, updated_at)
                SELECT 'bench', id, 'https://x.test/' || external_id, 0, 'ok', now()
                FROM products WHERE tenant_id = 'bench'""")
    )
    session.execute(
        text("""INSERT INTO items (tenant_id, product_id, image_id, kind, box, label, score, model, dim, embedding,
                                   in_stock, category)
                SELECT 'bench', i.product_id, i.id, 'whole', ARRAY[0, 0, 1, 1]::float8[], 'product', 1.0, :k, 1280,
                       (SELECT l2_normalize(array_agg(random() - 0.5)::vector) FROM generate_series(1, 1280)
                        WHERE i.id > 0), true, 'c'
                FROM product_images i WHERE i.tenant_id = 'bench'"""),
        {"k": BACKBONE_KEY},
    )


def _head_artefact(directory: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    head = {
        "w1": (rng.normal(size=(1280, 1024)) / 36).astype(np.float32),
        "b1": np.zeros(1024, np.float32),
        "w2": (rng.normal(size=(1024, 128)) / 32).astype(np.float32),
        "b2": np.zeros(128, np.float32),
    }
    card = {
        "name": "bench-head",
        "method": "supervised",
        "dim": 128,
        "input": {"size": 224, "preprocessing": "imagenet"},
        "backbone": {"name": "efficientnet-lite0", "model_key": BACKBONE_KEY},
    }
    return write_artefact(directory / "models", card, head=head)


if __name__ == "__main__":
    _child(sys.argv[1:])
