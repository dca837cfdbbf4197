"""Which model served each arm of an experiment: exposures grouped by arm and the model key they carry.

The storefront's exposure events carry `payload["model"]`: the key of the model that produced the list,
or null for the baseline arm and for a fallback. Takes a connection or session and never commits.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

# Same window as the statistics loader: exposures in [started_at, stopped_at) of the experiment
# (unbounded while it has no such time). ix_interaction_events_experiment (tenant, experiment, occurred_at)
# covers the filter.
_SERVED = text("""
    SELECT ie.arm, ie.payload->>'model' AS model, count(*) AS exposures
    FROM interaction_events ie
    LEFT JOIN experiments e ON e.tenant_id = ie.tenant_id AND e.key = ie.experiment
    WHERE ie.tenant_id = :tenant AND ie.experiment = :key AND ie.type = 'exposure' AND ie.arm IS NOT NULL
      AND (e.started_at IS NULL OR ie.occurred_at >= e.started_at)
      AND (e.stopped_at IS NULL OR ie.occurred_at < e.stopped_at)
    GROUP BY 1, 2
    ORDER BY 1, 3 DESC, 2 NULLS FIRST
""")


def served_models(conn: Connection | Session, tenant_id: str, experiment_key: str) -> dict[str, dict[str | None, int]]:
    """{arm: {model key or None (baseline / fallback): exposures}}, the most-served model first per arm."""
    out: dict[str, dict[str | None, int]] = {}
    for arm, model, exposures in conn.execute(_SERVED, {"tenant": tenant_id, "key": experiment_key}):
        out.setdefault(arm, {})[model] = int(exposures)
    return out
