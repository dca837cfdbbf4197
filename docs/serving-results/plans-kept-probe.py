"""Probe: the visual query's wall time and its Postgres backend's CPU per query, one pooled connection.

One-off. Start the data dir's Postgres (db.embedded.EmbeddedPostgres(<data dir>/postgres, shared_buffers="2GB")),
then run this once per code version, e.g. the commit before d75782c from a worktree ahead on the path:
PYTHONPATH=<worktree> PROBE_PG=<data dir>/postgres python plans-kept-probe.py
Each kind: 400 seeded products, one session each that commits (as the API's requests do), twice; then the
connection's prepared statements with their generic and custom plan counts."""

import os
import random
import statistics
import time

from sqlalchemy import text

from db.session import create_db_engine, session_factory
from db.vector_queries import similar_products

URL = "postgresql+psycopg://postgres:@/vitrine?host=" + os.environ["PROBE_PG"]
engine = create_db_engine(URL, pool_size=1, max_overflow=0)
S = session_factory(engine)
TENANT = "bench-index"
with S() as s:
    backend = s.scalar(text("SELECT pg_backend_pid()"))
    model = s.scalar(text("SELECT model FROM items WHERE tenant_id = :t AND code IS NOT NULL LIMIT 1"), {"t": TENANT})
    s.commit()
TICK = os.sysconf("SC_CLK_TCK")


def cpu_s() -> float:
    with open(f"/proc/{backend}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


rng = random.Random(5)
pids = [f"p{rng.randrange(1_000_000)}" for _ in range(400)]
out = {}
for _ in range(2):
    for kind in ("halfvec", "binary", "codes"):
        lat, c0 = [], cpu_s()
        for pid in pids:
            with S() as s:
                t = time.perf_counter()
                similar_products(
                    s, tenant_id=TENANT, external_id=pid, model_key=model, dim=128, strategy="hnsw", index_kind=kind
                )
                lat.append(time.perf_counter() - t)
                s.commit()
        wall_ms, cpu_ms = 1000 * statistics.median(lat), 1000 * (cpu_s() - c0) / len(pids)
        out.setdefault(kind, []).append((round(wall_ms, 2), round(cpu_ms, 2)))
print("(wall p50 ms, backend CPU ms per query), two passes:", out)
with S() as s:
    sql = "SELECT left(regexp_replace(statement, '\\s+', ' ', 'g'), 50), generic_plans, custom_plans"
    sql += " FROM pg_prepared_statements"
    for row in s.execute(text(sql)):
        print(tuple(row))
