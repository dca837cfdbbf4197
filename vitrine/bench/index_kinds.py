"""`vitrine bench serve --index KIND[,KIND]`: the visual arm on each index kind of one trained model, side by side.

The served model is a trained head with signed vectors, so the binary and codes kinds mean something:
a triplet head with a `bits`-wide code layer (training/methods.py) is trained on a sample of the
synthetic clustered backbone vectors (vitrine/bench/serve.py `clustered_vectors`, 1280-d, the
pretrained embedder's), labelled by cluster; all N backbone vectors are then mapped through it and
only the head's unit vectors and their codes are stored (items of the model, the code on each).
Each index kind is built once (timed, sized; the IVFFlat ones then tuned to the catalog as the workers
would, db/ivf_tuning.py, on a sample of their own: the recall below is measured on the bench's), then for
each kind an API and a worker are started with `VITRINE_EMBEDDER=trained`, `VITRINE_EMBEDDER_ARTEFACT` and
`VITRINE_INDEX_KIND=<kind>`, and measured: recall@10 against exact search (with and without a category
filter) of the index alone and of the API's answers, the raw query, closed-loop shoppers at each level,
and the index's scan
count (so a kind that silently fell back to a sequential scan would show).
"""

from __future__ import annotations

import io
import json
import logging
import os
import random
import time
import zipfile
from contextlib import ExitStack
from pathlib import Path

import numpy as np
from sqlalchemy import text

from core.settings import Settings, StackNotRunning
from db.ivf_tuning import TUNE_MIN_ENTRIES, TUNE_TARGET, needs_tuning, tune_ivf_index
from db.session import create_db_engine, libpq_url
from db.vector_index import (
    EF_CONSTRUCTION,
    INDEX_KINDS,
    IVF_KINDS,
    IVF_PROBES,
    _validity,
    check_kind,
    drop_vector_index,
    ensure_vector_index,
    index_lists,
    index_name,
    index_size_mb,
    read_tuning,
)
from db.vector_queries import (
    RERANK_FACTOR,
    RERANK_FACTOR_FILTERED,
    index_entries,
    ivf_settings,
    similar_products,
)
from vitrine.bench.serve import (
    CATEGORIES,
    CENTRES,
    LIMIT,
    SHARED_CORES_NOTE,
    _arm_runs,
    _server_settings,
    _storefront_key,
    _wait_worker_ready,
    clustered_vectors,
    raw_latency,
    recall_at_k,
)
from vitrine.local_system import LocalSystem, start_local_system

log = logging.getLogger(__name__)

TENANT = "bench-index"
MODEL_NAME = "bench-triplet"
GOAL_RECALL, GOAL_P99_MS, GOAL_BINARY_SMALLER = 0.95, 50.0, 8.0


def train_head(
    out_dir: Path,
    *,
    backbone,
    products: int,
    seed: int,
    bits: int,
    out_dim: int,
    sample: int,
    epochs: int,
) -> dict:
    """Train (or reuse) the triplet head with codes on the first `sample` catalog vectors; returns its facts."""
    from training.methods import HeadConfig, HeadData, Triplet
    from vision.trained import write_artefact

    config = HeadConfig(epochs=epochs, batch_size=256, hidden=512, out_dim=out_dim, bits=bits, seed=seed)
    recipe = {"backbone": backbone.model_key, "sample": min(sample, products), **config.as_dict()}
    meta = out_dir / "bench-head.json"
    if meta.exists():
        cached = json.loads(meta.read_text())
        if cached["recipe"] == recipe and Path(cached["path"]).exists():
            return {**cached, "reused": True}
    xs, labels = [], []
    for _, x, _, cl in clustered_vectors(products, backbone.dim, seed, clusters=True):
        xs.append(x)
        labels.append(cl)
        if sum(len(a) for a in xs) >= recipe["sample"]:
            break
    features = np.ascontiguousarray(np.concatenate(xs)[: recipe["sample"]], dtype=np.float32)
    y = np.concatenate(labels)[: recipe["sample"]].astype(np.int64)
    fitted = Triplet(config).fit(HeadData(features, y))
    card = {
        "name": MODEL_NAME,
        "method": "triplet",
        "depth": "head",
        "dim": out_dim,
        "bits": bits,
        "input": {"size": backbone.input_size, "preprocessing": "imagenet"},
        "backbone": {"name": backbone.name, "model_key": backbone.model_key},
        "data": f"{recipe['sample']} synthetic clustered vectors ({CENTRES} clusters, seed {seed}), cluster labels",
        "hyperparameters": config.as_dict(),
        "seconds": round(fitted.seconds, 1),
        "losses": [round(v, 4) for v in fitted.losses],
    }
    path = write_artefact(out_dir, card, head=fitted.weights)
    facts = {
        "recipe": recipe,
        "path": str(path),
        "train_s": round(fitted.seconds, 1),
        "losses": card["losses"],
        "reused": False,
    }
    meta.write_text(json.dumps(facts))
    return facts


def load_head_catalog(
    system: LocalSystem, *, products: int, seed: int, backbone_dim: int, model_key: str, dim: int, bits: int, head
) -> dict:
    """Map the N backbone vectors through the head and COPY the products with its vectors and codes; timed."""
    import psycopg
    from pgvector.psycopg import register_vector

    from vision.embedder import l2_normalize
    from vision.trained import apply_head

    map_s = 0.0
    with psycopg.connect(libpq_url(system.settings.database_url), autocommit=True) as pg:
        register_vector(pg)
        for kind in INDEX_KINDS:  # building once after the load is far cheaper than per row
            pg.execute(f"DROP INDEX IF EXISTS {index_name(model_key, kind)}")
        t0 = time.perf_counter()
        with pg.transaction():
            pg.execute(
                "CREATE TEMP TABLE bench_vec (n int, category text, embedding vector, code vector) ON COMMIT DROP"
            )
            with pg.cursor().copy("COPY bench_vec (n, category, embedding, code) FROM STDIN (FORMAT BINARY)") as cp:
                cp.set_types(["int4", "text", "vector", "vector"])
                for start, x, cat in clustered_vectors(products, backbone_dim, seed):
                    m0 = time.perf_counter()
                    z = l2_normalize(apply_head(head, x))
                    # TrainedEmbedder.codes: the signs of the code layer on the unit vectors, stored as +-1.
                    code = np.where(z @ head["w3"] + head["b3"] > 0, 1.0, -1.0).astype(np.float32)
                    map_s += time.perf_counter() - m0
                    for j in range(len(z)):
                        cp.write_row((start + j, f"c{cat[j]:02d}", z[j], code[j]))
            pg.execute("SET LOCAL enable_nestloop = off")  # fresh tables have no statistics (see serve.py)
            args = {"t": TENANT, "m": model_key, "d": dim}
            pg.execute(
                """INSERT INTO products (tenant_id, external_id, version, title, category, price, currency,
                                         in_stock, attributes, deleted, indexed_at)
                   SELECT %(t)s::varchar, 'p' || n, 1, 'Product ' || n, category, 10 + n %% 90, 'EUR',
                          true, '{}', false, now() FROM bench_vec""",
                args,
            )
            pg.execute(
                """INSERT INTO product_images (tenant_id, product_id, url, position, status)
                   SELECT %(t)s::varchar, id, 'http://127.0.0.1/bench/' || external_id || '.jpg', 0, 'ok'
                   FROM products WHERE tenant_id = %(t)s::varchar""",
                args,
            )
            pg.execute(
                """INSERT INTO items (tenant_id, product_id, image_id, kind, box, label, score, model, dim,
                                      in_stock, category, embedding, code)
                   SELECT %(t)s::varchar, p.id, pi.id, 'whole', '{0,0,320,320}', 'whole', 1.0, %(m)s, %(d)s, true,
                          v.category, v.embedding, binary_quantize(v.code)::varbit
                   FROM bench_vec v
                   JOIN products p ON p.tenant_id = %(t)s::varchar AND p.external_id = 'p' || v.n
                   JOIN product_images pi ON pi.product_id = p.id""",
                args,
            )
        load_s = time.perf_counter() - t0
        pg.execute("VACUUM ANALYZE products, product_images, items")
    return {
        "reused": False,
        "rows": products,
        "load_s": round(load_s, 1),
        "head_map_s": round(map_s, 1),
        "rows_per_s": round(products / load_s, 1),
    }


def build_kind(system: LocalSystem, model_key: str, dim: int, bits: int, kind: str) -> dict:
    """Build one kind's index with 1 GB of maintenance memory (the serve bench's setting); time and size.

    A worker may be building it already (its index check, `Reembedder.refresh_indexes`, finds the model's
    index of its own `VITRINE_INDEX_KIND` missing after the load): that build is waited for and reused."""
    _wait_for_concurrent_build(system, index_name(model_key, kind))
    t0, built = time.perf_counter(), False
    with system.engine.begin() as conn:
        exists = conn.scalar(text("SELECT to_regclass(:n) IS NOT NULL"), {"n": index_name(model_key, kind)})
        if not exists:
            conn.execute(text("SET LOCAL maintenance_work_mem = '1GB'"))
            ensure_vector_index(conn, model_key, bits if kind == "codes" else dim, kind=kind)
            built = True
    build_s = round(time.perf_counter() - t0, 1) if built else None
    with system.sessions() as s:
        conn = s.connection()
        size = index_size_mb(conn, model_key, kind)
        lists = index_lists(conn, model_key, kind) if kind in IVF_KINDS else None
        entries = index_entries(s, model_key, kind)
    out = {"index": index_name(model_key, kind), "build_s": build_s, "size_mb": size, "entries": entries}
    if not lists:
        return out | {"method": "hnsw"}
    return out | {"method": "ivfflat", "lists": lists} | tune_kind(system, model_key, kind)


def tune_kind(system: LocalSystem, model_key: str, kind: str) -> dict:
    """Tune the kind's IVFFlat index as the workers would (db/ivf_tuning.py) unless it is tuned for its size; the
    probes and Hamming candidates (x k) the API then uses without a filter, and the tuning."""
    with system.sessions() as s:
        due = needs_tuning(s, model_key, kind, min_entries=TUNE_MIN_ENTRIES)
    tuned = tune_ivf_index(system.sessions, model_key, kind) if due else None
    with system.sessions() as s:
        tuning = read_tuning(s.connection(), model_key, kind)
        probes, factor = ivf_settings(s, model_key, kind, filtered=False)
    trials = [t.__dict__ for t in tuned[1] if t.recall is not None] if tuned else None
    return {
        "probes": probes,
        "rerank_factor": factor,
        "tuning": tuning.__dict__ if tuning else None,
        "tuned_now": tuned is not None,
        "tuning_trials": trials,
    }


def _wait_for_concurrent_build(system: LocalSystem, name: str, timeout_s: float = 1800.0) -> None:
    """Wait while the index `name` is INVALID: a CREATE INDEX CONCURRENTLY under way (or one that died, which the
    timeout ends)."""
    deadline = time.monotonic() + timeout_s
    while True:
        with system.engine.connect() as conn:
            if _validity(conn, name) is not False:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"index {name} still INVALID after {timeout_s:.0f} s (a build that died?)")
        log.info("index %s: a concurrent build is under way; waiting", name)
        time.sleep(2)


def exact_answers(system: LocalSystem, pids: list[str], *, model_key: str, dim: int) -> dict:
    """The exact top 10 (cosine on the full vectors) of each product, without and with its category."""
    from db.product_queries import product_category

    out = {"all": {}, "same_category": {}, "category": {}}
    t0 = time.perf_counter()
    for pid in pids:
        with system.sessions() as s:
            out["category"][pid] = product_category(s, TENANT, pid)[1]
            for name, cat in (("all", None), ("same_category", out["category"][pid])):
                r = similar_products(
                    s,
                    tenant_id=TENANT,
                    external_id=pid,
                    model_key=model_key,
                    dim=dim,
                    limit=LIMIT,
                    category=cat,
                    strategy="exact",
                )
                out[name][pid] = [n.product_id for n in r.neighbours or []]
            s.rollback()
    out["seconds_per_query"] = round((time.perf_counter() - t0) / (2 * len(pids)), 3)
    return out


def _recall_summary(recalls: list[float], short: int) -> dict:
    return {
        "requests": len(recalls),
        "recall_at_10": round(float(np.mean(recalls)), 4),
        "min": round(min(recalls), 3),
        "short_answers": short,
    }


def index_recall(system: LocalSystem, truth: dict, *, model_key: str, dim: int, kind: str) -> dict:
    """recall@10 of the kind's index alone (HNSW forced, no exact redo counted as the index's) vs exact."""
    out = {}
    for name in ("all", "same_category"):
        recalls, short, redone = [], 0, 0
        for pid, exact in truth[name].items():
            with system.sessions() as s:
                r = similar_products(
                    s,
                    tenant_id=TENANT,
                    external_id=pid,
                    model_key=model_key,
                    dim=dim,
                    limit=LIMIT,
                    category=truth["category"][pid] if name == "same_category" else None,
                    strategy="hnsw",
                    index_kind=kind,
                )
                s.rollback()
            served = [n.product_id for n in r.neighbours or []]
            recalls.append(recall_at_k(served, exact))
            short += len(served) < LIMIT
            redone += r.strategy != "hnsw"
        out[name] = {**_recall_summary(recalls, short), "exact_redos": redone}
    return out


def served_recall(system: LocalSystem, key: str, truth: dict) -> dict:
    """recall@10 of the API's visual answers vs the exact answers, without and with same_category."""
    import httpx

    out = {}
    with httpx.Client(base_url=system.base_url, headers={"X-Vitrine-Key": key}, timeout=30) as http:
        for name in ("all", "same_category"):
            recalls, short = [], 0
            for i, (pid, exact) in enumerate(truth[name].items()):
                resp = http.get(
                    "/v1/recommendations",
                    params={
                        "product_id": pid,
                        "user_id": f"r{i}",
                        "limit": LIMIT,
                        "same_category": name == "same_category",
                    },
                )
                resp.raise_for_status()
                served = [it["product_id"] for it in resp.json()["items"]]
                recalls.append(recall_at_k(served, exact))
                short += len(served) < LIMIT
            out[name] = _recall_summary(recalls, short)
    return out


def _index_scans(system: LocalSystem, name: str) -> int:
    with system.engine.connect() as c:
        return c.scalar(
            text("SELECT coalesce(sum(idx_scan), 0)::bigint FROM pg_stat_user_indexes WHERE indexrelname = :n"),
            {"n": name},
        )


def _items(engine, model_key: str) -> tuple[int, int]:
    """The bench tenant's items of the model, and those with a code."""
    with engine.connect() as c:
        row = c.execute(
            text("SELECT count(*), count(code) FROM items WHERE tenant_id = :t AND model = :m"),
            {"t": TENANT, "m": model_key},
        ).one()
    return int(row[0]), int(row[1])


def run_index_bench(
    settings: Settings,
    *,
    kinds: list[str],
    products: int,
    seed: int = 0,
    levels: list[int] = (1, 10, 100),
    think_s: float = 1.0,
    duration_s: float = 12.0,
    max_requests: int = 20_000,
    recall_sample: int = 200,
    raw_sample: int = 1000,
    bits: int = 64,
    out_dim: int = 128,
    train_sample: int = 10_000,
    epochs: int = 3,
) -> dict:
    """Train the head, load its vectors and codes, build each kind, serve each; return the figures."""
    from core.machine import machine_info
    from vision.components import build_embedder
    from vision.trained import TrainedEmbedder
    from vitrine.stack import EmbeddedStack

    for kind in kinds:
        check_kind(kind)
    load_before = [round(x, 2) for x in os.getloadavg()]
    backbone = build_embedder(settings.model_copy(update={"embedder": "efficientnet-lite0"}))
    head = train_head(
        settings.data_dir / "bench-index" / "models",
        backbone=backbone,
        products=products,
        seed=seed,
        bits=bits,
        out_dim=out_dim,
        sample=train_sample,
        epochs=epochs,
    )
    trained = TrainedEmbedder(artefact=head["path"], cache_dir=settings.data_dir / "models")
    model_key, dim = trained.model_key, trained.dim
    log.info("head %s (%d-d, %d-bit codes): %s", model_key, dim, bits, head)
    env = {
        "VITRINE_EMBEDDER": "trained",
        "VITRINE_EMBEDDER_ARTEFACT": str(Path(head["path"]).resolve()),
    }
    out_kinds: dict[str, dict] = {}
    with ExitStack() as stack:
        try:
            resolved = settings.resolved()
        except StackNotRunning:
            embedded = EmbeddedStack(settings)
            resolved = embedded.start()
            stack.callback(embedded.stop)
        engine = create_db_engine(resolved.database_url)
        stack.callback(engine.dispose)
        # The first system (halfvec) loads the catalog and builds every index before the others start.
        loaded = _items(engine, model_key) == (products, products)
        builds: dict[str, dict] = {}
        load = {"reused": True, "rows": products}
        rng = random.Random(seed)
        pids = [f"p{rng.randrange(products)}" for _ in range(max(raw_sample, recall_sample))]
        truth = None
        for i, kind in enumerate(kinds):
            with ExitStack() as kind_stack:
                worker_log = settings.data_dir / f"bench-index-{kind}" / "logs" / "worker.log"
                offset = worker_log.stat().st_size if worker_log.exists() else 0
                if i == 0 and not loaded:
                    system = _system(resolved, kind_stack, kind, env)
                    system.fresh_tenant(TENANT, "Index kinds benchmark", default_arm="visual")
                    _wait_worker_ready(worker_log, offset)  # its start-up creates the halfvec index: drop it after
                    load = load_catalog_for(system, products, seed, backbone.dim, model_key, dim, bits, head["path"])
                else:
                    system = _system(resolved, kind_stack, kind, env)
                    _wait_worker_ready(worker_log, offset)
                if i == 0:
                    # halfvec always: the worker's start-up and search by image use it.
                    for k in dict.fromkeys(["halfvec", *kinds]):
                        builds[k] = build_kind(system, model_key, dim, bits, k)
                        log.info("index %s: %s", k, builds[k])
                    truth = exact_answers(system, pids[:recall_sample], model_key=model_key, dim=dim)
                out_kinds[kind] = _measure_kind(
                    system,
                    kind,
                    pids,
                    truth,
                    model_key=model_key,
                    dim=dim,
                    levels=list(levels),
                    think_s=think_s,
                    duration_s=duration_s,
                    max_requests=max_requests,
                    seed=seed,
                    raw_sample=raw_sample,
                )
                out_kinds[kind]["index"] = builds[kind]
                server = _server_settings(system)
    load_after = [round(x, 2) for x in os.getloadavg()]
    result = index_figures(
        machine_info(),
        load_before,
        load_after,
        out_kinds,
        builds,
        load,
        head,
        settings={
            "products": products,
            "kinds": list(kinds),
            "model": model_key,
            "dim": dim,
            "bits": bits,
            "backbone": backbone.model_key,
            "backbone_dim": backbone.dim,
            "centres": CENTRES,
            "categories": CATEGORIES,
            "seed": seed,
            "levels": list(levels),
            "think_s": think_s,
            "duration_s": duration_s,
            "max_requests": max_requests,
            "limit": LIMIT,
            "raw_sample": raw_sample,
            "recall_sample": recall_sample,
            "hnsw_build": {"m": 16, "ef_construction": EF_CONSTRUCTION, "maintenance_work_mem": "1GB"},
            "ivf": {
                "probes": IVF_PROBES,
                "tuned": f"from {TUNE_MIN_ENTRIES} entries, recall@10 target {TUNE_TARGET} (db/ivf_tuning.py)",
                "lists": "ivf_lists(rows) at build",
                "rerank_factor_by_entries": dict(RERANK_FACTOR),
                "rerank_factor_filtered": dict(RERANK_FACTOR_FILTERED),
            },
            "exact_s_per_query": truth["seconds_per_query"] if truth else None,
            "server": server,
        },
    )
    # Kept beside the catalog: a long run's figures survive a failure to print them.
    (settings.data_dir / "bench-index" / "last-result.json").write_text(json.dumps(result, default=str))
    return result


def _system(resolved: Settings, stack: ExitStack, kind: str, env: dict) -> LocalSystem:
    return start_local_system(
        resolved, stack, name=f"bench-index-{kind}", extra_env={**env, "VITRINE_INDEX_KIND": kind}
    )


def load_catalog_for(system, products, seed, backbone_dim, model_key, dim, bits, artefact: str) -> dict:
    """Drop what the worker built, load the catalog (head vectors and codes)."""
    with system.engine.begin() as conn:
        for kind in INDEX_KINDS:
            drop_vector_index(conn, model_key, kind)
    return load_head_catalog(
        system,
        products=products,
        seed=seed,
        backbone_dim=backbone_dim,
        model_key=model_key,
        dim=dim,
        bits=bits,
        head=head_arrays(artefact),
    )


def head_arrays(artefact: str | Path) -> dict[str, np.ndarray]:
    """The head's weights from its artefact, without loading the backbone (TrainedEmbedder.load would)."""
    with zipfile.ZipFile(artefact) as zf, np.load(io.BytesIO(zf.read("head.npz"))) as npz:
        return {k: npz[k].astype(np.float32) for k in npz.files}


def _measure_kind(
    system, kind, pids, truth, *, model_key, dim, levels, think_s, duration_s, max_requests, seed, raw_sample
):
    key = _storefront_key(system, "visual", TENANT)
    name = index_name(model_key, kind)
    raw_latency(system, pids[:raw_sample], model_key=model_key, dim=dim, tenant=TENANT, index_kind=kind)  # warm-up
    raw = raw_latency(system, pids[:raw_sample], model_key=model_key, dim=dim, tenant=TENANT, index_kind=kind)
    log.info("%s raw: %s", kind, raw)
    recall_index = index_recall(system, truth, model_key=model_key, dim=dim, kind=kind)
    scans_before = _index_scans(system, name)
    recall = served_recall(system, key, truth)
    log.info("%s recall: index %s, served %s", kind, recall_index, recall)
    runs = _arm_runs(
        system,
        key,
        "visual",
        pids,
        levels=levels,
        think_s=think_s,
        duration_s=duration_s,
        max_requests=max_requests,
        seed=seed,
        tenant=TENANT,
    )
    return {
        "raw_query": raw,
        "recall_index": recall_index,
        "recall": recall,
        "levels": runs,
        "api_index_scans": _index_scans(system, name) - scans_before,
    }


def index_figures(machine, load_before, load_after, kinds, builds, load, head, *, settings) -> dict:
    """The result object, with the issue's goals judged per kind."""
    top = max(settings["levels"])
    goals = {}
    for kind, r in kinds.items():
        p99 = next((x.get("p99_ms") for x in r["levels"]["think"] if x["users"] == top), None)
        max_qps = max((x.get("qps", 0) for x in r["levels"]["max_throughput"]), default=None)
        r["max_qps"] = max_qps
        goals[kind] = {
            "recall_all": r["recall"]["all"]["recall_at_10"],
            "recall_same_category": r["recall"]["same_category"]["recall_at_10"],
            "recall_met": min(r["recall"]["all"]["recall_at_10"], r["recall"]["same_category"]["recall_at_10"])
            >= GOAL_RECALL,
            "p99_ms_at_top_users": p99,
            "p99_met": p99 is not None and p99 < GOAL_P99_MS,
            "served_by_its_index": r["api_index_scans"] > 0,
        }
    half, binary = builds.get("halfvec", {}).get("size_mb"), builds.get("binary", {}).get("size_mb")
    ratio = round(half / binary, 2) if half and binary else None
    return {
        "benchmark": "serve-index",
        "machine": machine,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "note": SHARED_CORES_NOTE,
        "settings": settings,
        "head": head,
        "load": load,
        "indexes": builds,
        "kinds": kinds,
        "goals": {
            "top_users": top,
            "recall": GOAL_RECALL,
            "p99_ms": GOAL_P99_MS,
            "per_kind": goals,
            "halfvec_over_binary_size": ratio,
            "binary_8x_smaller": ratio is not None and ratio >= GOAL_BINARY_SMALLER,
        },
    }
