"""Probe: the bit kinds' query alone at several Hamming candidate counts (:kc), on a serve bench's database.

One-off. Start the data dir's Postgres (db.embedded.EmbeddedPostgres(<data dir>/postgres, shared_buffers="2GB")),
then: PROBE_PG=<data dir>/postgres PROBE_KC=160,640,1000 PROBE_Q=300 python bits-candidates-probe.py [explain]"""

import json
import os
import random
import sys
import time

from sqlalchemy import text
from sqlalchemy.orm import sessionmaker

from db.session import create_db_engine
from db.vector_index import IVF_PROBES
from db.vector_queries import _IVF_SETTINGS, _query

URL = "postgresql+psycopg://postgres:@/vitrine?host=" + os.environ["PROBE_PG"]
engine = create_db_engine(URL)
S = sessionmaker(engine)
T = "bench-index"
with engine.connect() as c:
    key, dim = c.execute(
        text("SELECT model, dim FROM items WHERE tenant_id=:t AND code IS NOT NULL LIMIT 1"), {"t": T}
    ).one()
    bits = c.scalar(
        text("SELECT bit_length(code) FROM items WHERE tenant_id=:t AND code IS NOT NULL LIMIT 1"), {"t": T}
    )
    n = c.scalar(text("SELECT count(*) FROM products WHERE tenant_id=:t"), {"t": T})
print(key, dim, bits, n)
rng = random.Random(1)
pids = [f"p{rng.randrange(n)}" for _ in range(int(os.environ.get("PROBE_Q", "200")))]
mode = sys.argv[1] if len(sys.argv) > 1 else "time"
for kind in ("binary", "codes"):
    for kc in map(int, os.environ.get("PROBE_KC", "160,640,1000").split(",")):
        q = _query(key, dim, exact=False, category=False, kind=kind, bits=bits if kind == "codes" else None)
        times = []
        with S() as s:
            s.execute(_IVF_SETTINGS, {"probes": str(IVF_PROBES)})
            if os.environ.get("PROBE_PCM"):
                s.execute(text("SET plan_cache_mode = " + os.environ["PROBE_PCM"]))
            for i, p in enumerate(pids):
                params = {"tenant": T, "pid": p, "limit": 10, "k": 40, "kc": kc, "category": None}
                if mode == "explain" and i == 0:
                    plan = s.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + q.text), params).all()
                    print("\n".join(r[0] for r in plan))
                t0 = time.perf_counter()
                s.execute(q, params).all()
                times.append(time.perf_counter() - t0)
        times.sort()
        print(
            json.dumps(
                {
                    "kind": kind,
                    "kc": kc,
                    "p50_ms": round(1000 * times[len(times) // 2], 2),
                    "mean_ms": round(1000 * sum(times) / len(times), 2),
                }
            ),
            flush=True,
        )
