"""`vitrine bench stats`: loader (SQL aggregation in Postgres) + analysis timed on N synthetic events.

Also prepares the experiments that `vitrine bench dashboard` times.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from sqlalchemy import text

from db.experiment_stats import load_experiment
from experiments.report import build_report

BENCH_TENANT = "bench-stats"  # + "-N": one tenant per size, so sizes do not share outcome events

# Synthetic events straight into Postgres: pairs of events per request (an exposure, then an
# exposure, click, add_to_cart or purchase), ~20 events per user, users split by parity,
# spread over 14 days. Pseudo-random but fixed by setseed.
GENERATE_SQL = """
INSERT INTO interaction_events (tenant_id, event_id, type, user_id, request_id, product_id,
                                experiment, arm, value, payload, occurred_at)
SELECT :tenant, :key || '-' || g,
       CASE WHEN g % 2 = 0 OR rnd < 0.60 THEN 'exposure' WHEN rnd < 0.90 THEN 'click'
            WHEN rnd < 0.96 THEN 'add_to_cart' ELSE 'purchase' END,
       'u' || u, 'r' || q, 'p' || (q % 5000), :key,
       CASE WHEN u % 2 = 0 THEN 'baseline' ELSE 'visual' END,
       CASE WHEN g % 2 = 1 AND rnd >= 0.96 THEN round((rnd * 1000)::numeric % 97, 2)::float8 END,
       '{}'::jsonb,
       CAST(:start AS timestamptz) + (q::float8 / :requests) * interval '14 days'
           + (g % 2) * interval '1 minute'
FROM (SELECT g, g / 2 AS q, ((g / 2) * 7919) % :users AS u, random() AS rnd
      FROM generate_series(0::bigint, CAST(:n AS bigint) - 1) AS g) s
"""


def prepare(engine, n: int, fresh: bool) -> tuple[str, str, float | None]:
    """Make sure tenant/experiment bench-stats-N holds exactly N events; (tenant, key, seconds generating)."""
    key = f"bench-stats-{n}"
    tenant = f"{BENCH_TENANT}-{n}"
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO tenants (id, name, storefront_key_hash, admin_key_hash, webhook_secret, default_arm) "
                "VALUES (:t, 'stats benchmark', :s, :a, 'unused', 'baseline') ON CONFLICT (id) DO NOTHING"
            ),
            {"t": tenant, "s": f"{tenant}-storefront-unused", "a": f"{tenant}-admin-unused"},
        )
        conn.execute(
            text(
                "INSERT INTO experiments (tenant_id, key, placement, status, arms, traffic_fraction, salt, "
                "hash_version, primary_metric, guardrails, started_at) VALUES (:t, :k, 'similar', 'stopped', "
                '\'[{"name": "baseline", "weight": 0.5}, {"name": "visual", "weight": 0.5}]\'::jsonb, 1.0, :k, '
                "1, 'ctr', '[]'::jsonb, :start) ON CONFLICT (tenant_id, key) DO NOTHING"
            ),
            {"t": tenant, "k": key, "start": start},
        )
        have = conn.execute(
            text("SELECT count(*) FROM interaction_events WHERE tenant_id = :t AND experiment = :k"),
            {"t": tenant, "k": key},
        ).scalar()
    if have == n and not fresh:
        return tenant, key, None
    t0 = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(
            text("DELETE FROM interaction_events WHERE tenant_id = :t AND experiment = :k"), {"t": tenant, "k": key}
        )
        conn.execute(text("SELECT setseed(0.42)"))
        conn.execute(
            text(GENERATE_SQL),
            {
                "tenant": tenant,
                "key": key,
                "start": start,
                "n": n,
                "requests": max(n // 2, 1),
                "users": max(n // 20, 2),
            },
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        # Hint bits + statistics before timing, for the events and the rollup the triggers filled.
        for table in (
            "interaction_events",
            "experiment_requests",
            "experiment_pending_outcomes",
            "experiment_user_days",
        ):
            conn.execute(text(f"VACUUM (ANALYZE) {table}"))
    return tenant, key, time.perf_counter() - t0


def time_stats(engine, sizes: list[int], *, daily: bool, fresh: bool, cleanup: bool, source: str) -> list[dict]:
    """Per size: generate (or reuse) the events, then time loading, analysis and the per-day series."""
    rows = []
    for n in sizes:
        tenant, key, gen_s = prepare(engine, n, fresh)
        with engine.connect() as conn:
            t0 = time.perf_counter()
            loaded = load_experiment(conn, tenant, key, source=source)
            t1 = time.perf_counter()
            # Which source answered: "auto" reads the rollup only when it is exact.
            definition, stats, used = loaded.definition, loaded.stats, loaded.source
            build_report(definition, stats)
            t2 = time.perf_counter()
            daily_s = None
            if daily:
                load_experiment(conn, tenant, key, daily=True, source=source)
                daily_s = time.perf_counter() - t2 - (t1 - t0)  # daily query alone (approx.)
            conn.rollback()
        rows.append(
            {
                "events": n,
                "users": sum(a.users for a in stats.arms),
                "generate_s": gen_s,
                "load_s": t1 - t0,
                "analysis_s": t2 - t1,
                "total_s": t2 - t0,
                "daily_s": daily_s,
                "source": used,
            }
        )
        if cleanup:
            with engine.begin() as conn:
                conn.execute(
                    text("DELETE FROM interaction_events WHERE tenant_id = :t AND experiment = :k"),
                    {"t": tenant, "k": key},
                )
    return rows
