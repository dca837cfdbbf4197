"""Probe: IVFFlat over sign bits / codes at 1M vs exact. One-off; usage: python ivf_probe.py build|query

Kept as it ran: it needs the code before migration 0017 (codes as `<key>+codes` items, `codes_key`)."""

import json
import os
import random
import sys
import time

import numpy as np
from sqlalchemy import text
from sqlalchemy.orm import sessionmaker

from db.session import create_db_engine
from db.vector_index import bit_expr, codes_key
from db.vector_queries import similar_products

URL = "postgresql+psycopg://postgres:@/vitrine?host=" + os.environ.get("PROBE_PG", "/tmp/vib-1m/postgres")
engine = create_db_engine(URL)
Session = sessionmaker(engine)
T = "bench-index"
with engine.connect() as c:
    key, dim = c.execute(
        text("SELECT model, dim FROM items WHERE tenant_id=:t AND model NOT LIKE '%+codes' LIMIT 1"), {"t": T}
    ).one()
    bits = c.scalar(
        text("SELECT dim FROM items WHERE tenant_id=:t AND model=:m LIMIT 1"), {"t": T, "m": codes_key(key)}
    )
print(key, dim, bits, flush=True)


def build(kind, lists):
    k, d = (key, dim) if kind == "binary" else (codes_key(key), bits)
    name = f"ix_probe_ivf_{kind}"
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(text(f"DROP INDEX IF EXISTS {name}"))
        c.execute(text("SET maintenance_work_mem = '1GB'"))
        t0 = time.perf_counter()
        c.execute(
            text(
                f"CREATE INDEX {name} ON items USING ivfflat ({bit_expr(d)} bit_hamming_ops) "
                f"WITH (lists = {lists}) WHERE model = '{k}'"
            )
        )
        s = time.perf_counter() - t0
        mb = c.scalar(text(f"SELECT pg_relation_size('{name}')")) / 2**20
    print(json.dumps({"kind": kind, "lists": lists, "build_s": round(s, 1), "size_mb": round(mb, 1)}), flush=True)


def query(n=100, configs=((10, 16), (10, 25)), cat=False):
    rng = random.Random(0)
    pids = [f"p{rng.randrange(int(os.environ.get('PROBE_N', '1000000')))}" for _ in range(n)]
    truth = {}
    from db.product_queries import product_category

    with Session() as s:
        cats = {p: product_category(s, T, p)[1] for p in pids}
    t0 = time.perf_counter()
    for p in pids:
        with Session() as s:
            r = similar_products(
                s,
                tenant_id=T,
                external_id=p,
                model_key=key,
                dim=dim,
                limit=10,
                strategy="exact",
                category=cats[p] if cat else None,
            )
            truth[p] = {x.product_id for x in r.neighbours}
    print("exact s/query", round((time.perf_counter() - t0) / n, 3), flush=True)
    import db.vector_queries as vq

    for kind in ("binary", "codes"):
        for probes, factor in configs:
            vq.RERANK_FACTOR[kind] = factor
            vq.RERANK_FACTOR_FILTERED[kind] = factor  # (one dict when the runs beside this file were made)
            rec, lat, strat = [], [], set()
            for p in pids:
                with Session() as s:
                    vq.IVF_PROBES = probes
                    t = time.perf_counter()
                    r = similar_products(
                        s,
                        tenant_id=T,
                        external_id=p,
                        model_key=key,
                        dim=dim,
                        limit=10,
                        strategy="hnsw",
                        index_kind=kind,
                        category=cats[p] if cat else None,
                    )
                    lat.append((time.perf_counter() - t) * 1000)
                    strat.add(r.strategy)
                    rec.append(len(truth[p] & {x.product_id for x in r.neighbours}) / 10)
            print(
                json.dumps(
                    {
                        "kind": kind,
                        "category": cat,
                        "probes": probes,
                        "factor": factor,
                        "recall": round(float(np.mean(rec)), 3),
                        "min": min(rec),
                        "p50_ms": round(float(np.percentile(lat, 50)), 1),
                        "p99_ms": round(float(np.percentile(lat, 99)), 1),
                        "strategies": sorted(strat),
                    }
                ),
                flush=True,
            )


if sys.argv[1] == "build":
    build("binary", int(sys.argv[2]))
    build("codes", int(sys.argv[2]))
elif sys.argv[1] == "explain":
    with Session() as s:
        s.execute(text("SET LOCAL ivfflat.probes = 32"))
        import db.vector_queries as vq

        q = vq._sql(key, dim, exact=False, category=False, kind="binary")
        for row in s.execute(
            text("EXPLAIN (ANALYZE, BUFFERS) " + q),
            {"tenant": T, "pid": "p123", "limit": 10, "k": 40, "kc": 160, "category": None},
        ):
            print(row[0])
else:
    query(cat=sys.argv[1] == "query-cat")
