"""`vitrine bench serve`: storefront latency of both arms at rising concurrency, against the raw pgvector floor.

The catalog is synthetic: N products with one whole-image item each, clustered vectors (centres plus
low-rank spread plus noise, L2-normalised, seeded) written under the configured embedder's model key
and dimension, so the running API serves them. The load generator is closed-loop: each "user" sends
a request, waits for the answer, thinks (exponential, mean --think seconds), and repeats; a second
pass with think time 0 measures the maximum throughput. It runs in this process, on the same cores
as the API and Postgres, and only against 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import secrets
import time
from collections import Counter
from contextlib import ExitStack

import numpy as np
from sqlalchemy import text

from core.settings import Settings
from db.session import libpq_url
from db.tenants import hash_key
from db.vector_index import ensure_vector_index, index_name
from db.vector_queries import choose_strategy, similar_products
from vitrine.local_system import LocalSystem, start_local_system

log = logging.getLogger(__name__)

TENANT = "bench-serve"
CENTRES, CATEGORIES, LATENT = 1000, 16, 16
SPREAD, NOISE = 0.1, 0.1  # within-cluster spread ~0.4 along LATENT directions, noise ~0.1, centres 1 apart
CHUNK = 5000
LIMIT = 10
SHARED_CORES_NOTE = (
    "the load generator runs on the same cores as the API, the worker and Postgres: "
    "its own CPU time is taken from the system under test"
)


def latency_summary(latencies_s: list[float], elapsed_s: float, errors: int = 0) -> dict:
    """Count, throughput and p50/p95/p99/max in milliseconds of successful requests (None without any)."""
    n = len(latencies_s)
    ms = dict.fromkeys(("p50_ms", "p95_ms", "p99_ms", "max_ms"))
    if n:  # np.percentile raises on no data; a level where nothing succeeded reports None
        # numpy's default "linear" method interpolates between closest ranks; q = 100 is the maximum.
        values = np.percentile(latencies_s, (50, 95, 99, 100))
        ms = {k: round(float(v) * 1000, 2) for k, v in zip(ms, values, strict=True)}
    return {
        "requests": n,
        "errors": errors,
        "elapsed_s": round(elapsed_s, 2),
        "qps": round(n / elapsed_s, 1) if elapsed_s > 0 else 0.0,
        **ms,
    }


SLOW_MS = 50.0  # the p99 goal at 100 shoppers: a request over it is part of the tail `tail_seconds` places


def tail_seconds(starts_s: list[float], latencies_s: list[float], t0_wall: float, *, top: int = 3) -> dict:
    """Where a level's slow requests sat in time: how many took over SLOW_MS, in how many of the level's
    seconds (by when they were sent), and the `top` seconds with the most of them (wall clock, UTC, to set beside
    a CPU or I/O probe). A tail spread over many seconds is load; one packed into a few is a stall of something
    the requests wait on."""
    per_second: dict[int, list[float]] = {}
    for start, latency in zip(starts_s, latencies_s, strict=True):
        per_second.setdefault(int(start), []).append(latency)
    slow = {s: sum(lat * 1000 > SLOW_MS for lat in lats) for s, lats in per_second.items()}
    worst = sorted((s for s in slow if slow[s]), key=lambda s: (-slow[s], s))[:top]
    return {
        "over_50ms": sum(slow.values()),
        "seconds_over_50ms": sum(1 for n in slow.values() if n),
        "worst_seconds": [
            {
                "at": time.strftime("%H:%M:%S", time.gmtime(t0_wall + s)),
                "requests": len(per_second[s]),
                "over_50ms": slow[s],
                "max_ms": round(max(per_second[s]) * 1000, 1),
            }
            for s in worst
        ],
    }


def recall_at_k(served: list[str], exact: list[str], k: int = LIMIT) -> float:
    """Share of the exact top-k found in the served top-k (1.0 when exact search finds nothing)."""
    truth = set(exact[:k])
    return len(truth & set(served[:k])) / len(truth) if truth else 1.0


def clustered_vectors(n: int, dim: int, seed: int, *, clusters: bool = False):
    """Yield (start, unit vectors float32 (m, dim), categories int (m,)) in chunks; the same for a seed.

    With `clusters`, each chunk also carries the rows' cluster numbers (labels to train a head on).
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CENTRES, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    # A shared low-rank basis gives each cluster an internal structure, so neighbours within a
    # cluster are well defined (isotropic noise alone makes all within-cluster distances tie).
    basis = rng.standard_normal((LATENT, dim), dtype=np.float32) / np.sqrt(dim)
    centre_cat = rng.integers(CATEGORIES, size=CENTRES)
    for start in range(0, n, CHUNK):
        m = min(CHUNK, n - start)
        cl = rng.integers(CENTRES, size=m)
        x = centres[cl] + SPREAD * (rng.standard_normal((m, LATENT), dtype=np.float32) @ basis)
        x += NOISE * rng.standard_normal((m, dim), dtype=np.float32) / np.sqrt(dim)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        # Mostly the cluster's category, sometimes another: a category filter then changes the answer.
        cat = np.where(rng.random(m) < 0.8, centre_cat[cl], rng.integers(CATEGORIES, size=m))
        yield (start, x, cat, cl) if clusters else (start, x, cat)


def _loaded_items(system: LocalSystem, model_key: str) -> int:
    with system.engine.connect() as c:
        return c.scalar(
            text("SELECT count(*) FROM items WHERE tenant_id = :t AND model = :m"), {"t": TENANT, "m": model_key}
        )


def load_catalog(system: LocalSystem, *, products: int, model_key: str, dim: int, seed: int) -> dict:
    """COPY the synthetic catalog with the model's HNSW index dropped, then build it; returns timings."""
    import psycopg
    from pgvector.psycopg import register_vector

    name = index_name(model_key)
    with psycopg.connect(libpq_url(system.settings.database_url), autocommit=True) as pg:
        register_vector(pg)
        # Building once after the load is far cheaper than keeping the graph up to date per row.
        pg.execute(f"DROP INDEX IF EXISTS {name}")
        t0 = time.perf_counter()
        with pg.transaction():
            pg.execute("CREATE TEMP TABLE bench_vec (n int, category text, embedding vector) ON COMMIT DROP")
            with pg.cursor().copy("COPY bench_vec (n, category, embedding) FROM STDIN (FORMAT BINARY)") as cp:
                cp.set_types(["int4", "text", "vector"])
                for start, x, cat in clustered_vectors(products, dim, seed):
                    for j in range(len(x)):
                        cp.write_row((start + j, f"c{cat[j]:02d}", x[j]))
            # Fresh tables have no statistics: the planner guessed a few hundred rows and joined by
            # nested loop, 100k x 100k comparisons (10 minutes); hash joins take seconds.
            pg.execute("SET LOCAL enable_nestloop = off")
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
                                      in_stock, category, embedding)
                   SELECT %(t)s::varchar, p.id, pi.id, 'whole', '{0,0,320,320}', 'whole', 1.0, %(m)s, %(d)s,
                          true, v.category, v.embedding
                   FROM bench_vec v
                   JOIN products p ON p.tenant_id = %(t)s::varchar AND p.external_id = 'p' || v.n
                   JOIN product_images pi ON pi.product_id = p.id""",
                args,
            )
            # Some engagement for the baseline to rank by (every 5th product, seeded by its number).
            pg.execute(
                """INSERT INTO product_popularity (tenant_id, product_id, score, updated_at)
                   SELECT %(t)s::varchar, 'p' || n, 1 + (n * 7919) %% 100, now()
                   FROM bench_vec WHERE n %% 5 = 0""",
                args,
            )
        load_s = time.perf_counter() - t0
        pg.execute("ANALYZE products, product_images, items, product_popularity")
    build_s = build_index(system, model_key, dim)
    return {
        "reused": False,
        "rows": products,
        "load_s": round(load_s, 1),
        "rows_per_s": round(products / load_s, 1),
        "hnsw_build_s": round(build_s, 1),
    }


def build_index(system: LocalSystem, model_key: str, dim: int) -> float:
    """Build the model's HNSW index with 1 GB of maintenance memory (4x faster than the 64 MB default)."""
    t0 = time.perf_counter()
    with system.engine.begin() as conn:
        conn.execute(text("SET LOCAL maintenance_work_mem = '1GB'"))
        ensure_vector_index(conn, model_key, dim)
    return time.perf_counter() - t0


def _wait_worker_ready(path, offset: int, timeout_s: float = 300) -> None:
    """Wait for the worker's start-up, which creates the HNSW index: it must not reappear mid-load."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            with open(path, "rb") as f:
                f.seek(offset)
                if b"worker ready" in f.read():
                    return
        time.sleep(0.5)
    raise RuntimeError(f"the worker did not log 'worker ready' within {timeout_s:.0f}s (see {path})")


def _storefront_key(system: LocalSystem, default_arm: str, tenant: str = TENANT) -> str:
    """A fresh storefront key for the existing bench tenant (keys are stored hashed, so rotate)."""
    key = f"vsk_{tenant}_{secrets.token_urlsafe(24)}"
    with system.engine.begin() as c:
        c.execute(
            text("UPDATE tenants SET storefront_key_hash = :h, default_arm = :a WHERE id = :t"),
            {"h": hash_key(key), "a": default_arm, "t": tenant},
        )
    return key


def _set_arm(system: LocalSystem, arm: str, tenant: str = TENANT) -> None:
    with system.engine.begin() as c:
        c.execute(text("UPDATE tenants SET default_arm = :a WHERE id = :t"), {"a": arm, "t": tenant})


async def _closed_loop(
    base_url: str,
    key: str,
    pids: list[str],
    *,
    users: int,
    think_s: float,
    duration_s: float,
    max_requests: int,
    seed: int,
    same_category: bool = False,
) -> dict:
    """`users` closed-loop shoppers for `duration_s` (or `max_requests`); latency per successful request."""
    import aiohttp

    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    starts: list[float] = []  # when each successful request was sent, seconds into the level
    errors: Counter[str] = Counter()
    sent = 0
    stop_at = loop.time() + duration_s
    level_t0, level_wall = time.perf_counter(), time.time()
    params_extra = {"same_category": "true"} if same_category else {}

    async def shopper(u: int, http: aiohttp.ClientSession) -> None:
        nonlocal sent
        rng = random.Random(seed * 100_003 + u)
        if think_s:  # stagger the first arrivals instead of a thundering herd at t=0
            await asyncio.sleep(rng.uniform(0, think_s))
        while loop.time() < stop_at and sent < max_requests:
            sent += 1
            pid = pids[rng.randrange(len(pids))]
            t0 = time.perf_counter()
            try:
                async with http.get(
                    "/v1/recommendations",
                    params={"product_id": pid, "user_id": f"u{u}", "limit": str(LIMIT), **params_extra},
                ) as resp:
                    await resp.read()
                    status = resp.status
            except (TimeoutError, aiohttp.ClientError) as exc:
                status = type(exc).__name__
            if status == 200:
                latencies.append(time.perf_counter() - t0)
                starts.append(t0 - level_t0)
            else:
                errors[str(status)] += 1
            if think_s:
                await asyncio.sleep(min(rng.expovariate(1 / think_s), max(0.0, stop_at - loop.time())))

    connector = aiohttp.TCPConnector(limit=users)  # one keep-alive connection per shopper, like a browser
    async with aiohttp.ClientSession(
        base_url, connector=connector, headers={"X-Vitrine-Key": key}, timeout=aiohttp.ClientTimeout(total=10)
    ) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(shopper(u, http) for u in range(users)))
        elapsed = time.perf_counter() - t0
    out = latency_summary(latencies, elapsed, sum(errors.values()))
    out.update(users=users, think_s=think_s, error_kinds=dict(errors), tail=tail_seconds(starts, latencies, level_wall))
    return out


def _drain(system: LocalSystem, key: str, pid: str, arm: str | None = None, timeout_s: float = 60) -> float:
    """Wait until the API answers one request within 1 s, so a level does not inherit the last one's queue.

    With `arm`, also until the answer comes from that arm: the API caches the tenant (and so its
    default arm) for `lookup_cache_ttl_s` after `_set_arm` changed it.

    A saturated API deadlocks its own pool (each request holds its auth session, idle in transaction,
    while waiting for a second connection) and then takes minutes to drain; ending those stale
    sessions lets the queued requests fail fast. Their errors are not counted in any level.
    """
    import httpx

    t0 = time.monotonic()
    with httpx.Client(base_url=system.base_url, headers={"X-Vitrine-Key": key}) as http:
        while time.monotonic() - t0 < timeout_s:
            try:
                resp = http.get("/v1/recommendations", params={"product_id": pid, "user_id": "drain"}, timeout=1.0)
                if resp.status_code == 200 and (arm is None or resp.json()["arm"] == arm):
                    break
            except httpx.HTTPError:
                pass
            with system.engine.begin() as c:
                c.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = "
                        "current_database() AND state = 'idle in transaction' "
                        "AND state_change < now() - interval '2 seconds'"
                    )
                )
            time.sleep(0.5)
    return round(time.monotonic() - t0, 1)


def raw_latency(
    system: LocalSystem,
    pids: list[str],
    *,
    model_key: str,
    dim: int,
    tenant: str = TENANT,
    index_kind: str = "halfvec",
) -> dict:
    """The visual arm's query alone, sequential, one session per call.

    `similar_products` with the exact-or-HNSW choice made once for the tenant, as the API's
    visual arm does (it caches that choice), so the floor holds exactly the statements the API
    runs for a request: the two hnsw settings and the kNN (an exact redo if HNSW came back short),
    on pooled connections that keep their prepared statements and plans as the API's do.
    """
    with system.sessions() as s:
        strategy = choose_strategy(s, model_key=model_key, tenant_id=tenant, category=None)
    latencies, strategies = [], Counter()
    for pid in pids:
        with system.sessions() as s:
            t0 = time.perf_counter()
            r = similar_products(
                s,
                tenant_id=tenant,
                external_id=pid,
                model_key=model_key,
                dim=dim,
                limit=LIMIT,
                strategy=strategy,
                index_kind=index_kind,
            )
            latencies.append(time.perf_counter() - t0)
            s.commit()  # as the API does: a rollback would make psycopg drop its prepared statements
        strategies[r.strategy] += 1
    out = latency_summary(latencies, sum(latencies))
    out["strategies"] = dict(strategies)
    return out


def served_recall(system: LocalSystem, key: str, pids: list[str], *, model_key: str, dim: int) -> dict:
    """recall@10 of the API's visual answers vs forced exact search, without and with same_category."""
    import httpx

    from db.product_queries import product_category

    out = {}
    with httpx.Client(base_url=system.base_url, headers={"X-Vitrine-Key": key}, timeout=30) as http:
        for same in (False, True):
            recalls, short = [], 0
            for i, pid in enumerate(pids):
                resp = http.get(
                    "/v1/recommendations",
                    params={"product_id": pid, "user_id": f"r{i}", "limit": LIMIT, "same_category": same},
                )
                resp.raise_for_status()
                served = [it["product_id"] for it in resp.json()["items"]]
                with system.sessions() as s:
                    _, cat = product_category(s, TENANT, pid)
                    exact = similar_products(
                        s,
                        tenant_id=TENANT,
                        external_id=pid,
                        model_key=model_key,
                        dim=dim,
                        limit=LIMIT,
                        category=cat if same else None,
                        strategy="exact",
                    )
                    s.rollback()
                recalls.append(recall_at_k(served, [n.product_id for n in exact.neighbours or []]))
                short += len(served) < LIMIT
            out["same_category" if same else "all"] = {
                "requests": len(pids),
                "recall_at_10": round(float(np.mean(recalls)), 4),
                "min": round(min(recalls), 3),
                "short_answers": short,
            }
    return out


def cache_lookups(base_url: str) -> dict[str, dict[str, float]]:
    """The API's `vitrine_serving_cache_lookups_total` counters: {cache: {"hit": n, "miss": n}}."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(httpx.get(f"{base_url}/metrics/", timeout=10).text):
        for sample in family.samples:
            if sample.name == "vitrine_serving_cache_lookups_total":
                out.setdefault(sample.labels["cache"], {})[sample.labels["outcome"]] = sample.value
    return out


def cache_hit_rates(before: dict, after: dict) -> dict[str, dict]:
    """Lookups and hit rate per cache between two `cache_lookups` readings (caches not read are left out)."""
    out = {}
    for name, counts in after.items():
        hits = counts.get("hit", 0) - before.get(name, {}).get("hit", 0)
        misses = counts.get("miss", 0) - before.get(name, {}).get("miss", 0)
        if hits + misses:
            out[name] = {"lookups": int(hits + misses), "hit_rate": round(hits / (hits + misses), 4)}
    return out


def _arm_runs(
    system: LocalSystem,
    key: str,
    arm: str,
    pids: list[str],
    *,
    levels: list[int],
    think_s: float,
    duration_s: float,
    max_requests: int,
    seed: int,
    tenant: str = TENANT,
) -> dict:
    _set_arm(system, arm, tenant)
    before = cache_lookups(system.base_url)

    def run(users: int, think: float, dur: float) -> dict:
        drained = _drain(system, key, pids[0], arm)
        r = asyncio.run(
            _closed_loop(
                system.base_url,
                key,
                pids,
                users=users,
                think_s=think,
                duration_s=dur,
                max_requests=max_requests,
                seed=seed + users,
            )
        )
        return {**r, "drain_s": drained}

    run(10, 0.0, 3.0)  # warm-up: connections, plan caches, the index pages in shared buffers
    out = {"think": [], "max_throughput": []}
    for mode, think in (("think", think_s), ("max_throughput", 0.0)):
        for users in levels:
            r = run(users, think, duration_s)
            out[mode].append(r)
            log.info("%s %s users %d: %s", arm, mode, users, r)
            if r["errors"] > r["requests"]:  # saturated: more users only add timeouts (and a long drain)
                out[mode] += [
                    {"users": u, "think_s": think, "skipped": f"saturated at {users} users"}
                    for u in levels
                    if u > users
                ]
                break
    out["caches"] = cache_hit_rates(before, cache_lookups(system.base_url))
    return out


def run_serve_bench(
    settings: Settings,
    *,
    products: int,
    seed: int = 0,
    levels: list[int] = (1, 10, 50, 100),
    think_s: float = 1.0,
    duration_s: float = 12.0,
    max_requests: int = 20_000,
    recall_sample: int = 200,
    raw_sample: int = 1000,
) -> dict:
    """Load (or reuse) the catalog, run both arms, the raw query and recall; return the figures."""
    from core.machine import machine_info
    from vision.components import build_embedder

    embedder = build_embedder(settings)  # only its key and dimension: what the API's visual arm queries
    model_key, dim = embedder.model_key, embedder.dim
    load_before = [round(x, 2) for x in os.getloadavg()]
    worker_log = settings.data_dir / "bench-serve" / "logs" / "worker.log"
    offset = worker_log.stat().st_size if worker_log.exists() else 0
    with ExitStack() as stack:
        system = start_local_system(settings, stack, name="bench-serve")
        _wait_worker_ready(worker_log, offset)
        if _loaded_items(system, model_key) == products:
            with system.engine.connect() as c:
                has_index = c.scalar(
                    text("SELECT 1 FROM pg_indexes WHERE indexname = :n"), {"n": index_name(model_key)}
                )
            build_s = None if has_index else round(build_index(system, model_key, dim), 1)
            load = {"reused": True, "rows": products, "load_s": None, "rows_per_s": None, "hnsw_build_s": build_s}
        else:
            system.fresh_tenant(TENANT, "Serve benchmark", default_arm="visual")
            load = load_catalog(system, products=products, model_key=model_key, dim=dim, seed=seed)
        log.info("catalog: %s", load)
        key = _storefront_key(system, "visual")
        rng = random.Random(seed)
        pids = [f"p{rng.randrange(products)}" for _ in range(max(raw_sample, recall_sample))]
        # The floor and recall first: a saturated level can leave the API slow for a while after it.
        # Warm-up: one full pass, so the floor reads the same warm pages the API's levels will.
        raw_latency(system, pids[:raw_sample], model_key=model_key, dim=dim)
        raw = raw_latency(system, pids[:raw_sample], model_key=model_key, dim=dim)
        log.info("raw: %s", raw)
        recall = served_recall(system, key, pids[:recall_sample], model_key=model_key, dim=dim)
        log.info("recall: %s", recall)
        arms = {
            arm: _arm_runs(
                system,
                key,
                arm,
                pids,
                levels=list(levels),
                think_s=think_s,
                duration_s=duration_s,
                max_requests=max_requests,
                seed=seed,
            )
            for arm in ("visual", "baseline")
        }
        server = _server_settings(system)
    load_after = [round(x, 2) for x in os.getloadavg()]
    return _figures(
        machine_info(),
        load_before,
        load_after,
        arms,
        raw,
        recall,
        load,
        levels,
        settings={
            "products": products,
            "model": model_key,
            "dim": dim,
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
            "server": server,
        },
    )


def _server_settings(system: LocalSystem) -> dict:
    """What the figures depend on besides the code: Postgres memory, uvicorn's loop and parser, the caches."""
    import importlib.util

    from vitrine.stack import running_broker_storage

    with system.engine.connect() as c:
        shared_buffers = c.scalar(text("SHOW shared_buffers"))
    st = system.settings
    return {
        "shared_buffers": shared_buffers,
        "uvicorn": "uvloop+httptools"
        if importlib.util.find_spec("uvloop") and importlib.util.find_spec("httptools")
        else "asyncio+h11",
        "hnsw_ef_search": st.hnsw_ef_search,
        "lookup_cache_ttl_s": st.lookup_cache_ttl_s,
        "popularity_cache_ttl_s": st.popularity_cache_ttl_s,
        "serve_concurrency": st.serve_concurrency,
        # Every response sends an exposure through the broker, on the same cores: its storage and batching count.
        "broker_storage": running_broker_storage(st) or st.broker_storage,
        "exposure_linger_s": st.exposure_linger_s,
    }


def _figures(machine, load_before, load_after, arms, raw, recall, load, levels, *, settings) -> dict:
    top = max(levels)
    p99_top = next(r for r in arms["visual"]["think"] if r["users"] == top).get("p99_ms")  # None: no success
    # One user is sequential in both modes; think 0 has more samples, think 1 s survives a stuck API.
    seq_p50 = next(
        (
            r.get("p50_ms")
            for mode in ("max_throughput", "think")
            for r in arms["visual"][mode]
            if r["users"] == 1 and r.get("p50_ms")
        ),
        None,
    )
    overhead = round(seq_p50 / raw["p50_ms"], 2) if seq_p50 and raw["p50_ms"] else None
    return {
        "benchmark": "serve",
        "machine": machine,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "note": SHARED_CORES_NOTE,
        "settings": settings,
        "load": load,
        "arms": arms,
        "raw_query": raw,
        "recall": recall,
        "goals": {
            "visual_p99_ms_at_top_users": p99_top,
            "top_users": top,
            "visual_p99_under_50ms": p99_top is not None and p99_top < 50,
            "api_p50_over_raw_p50": overhead,
            "api_overhead_under_2x": overhead is not None and overhead < 2,
        },
    }
