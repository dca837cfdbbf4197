"""Time-decayed product popularity, updated from interaction events, read by the baseline arm."""

from __future__ import annotations

import math
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

WEIGHTS = {"click": 1.0, "add_to_cart": 3.0, "purchase": 5.0}  # exposures do not count


def add_engagement(session: Session, rows: list[tuple[str, str, str, datetime]], half_life_s: float) -> None:
    """Fold (tenant, product, event type, occurred_at) rows into the decayed scores, one statement."""
    rows = [r for r in rows if r[2] in WEIGHTS and r[1]]
    if not rows:
        return
    lam = math.log(2) / half_life_s
    # Decay the stored score to the new event's time, then add its weight (per row, in time order,
    # aggregated first so one statement touches each product once).
    session.execute(
        text("""
        INSERT INTO product_popularity AS pp (tenant_id, product_id, score, updated_at)
        SELECT tenant_id, product_id,
               sum(weight * exp(-:lam * extract(epoch FROM (max_at - at)))), max_at
        FROM (
            SELECT t.tenant_id, t.product_id, t.weight, t.at, max(t.at) OVER w AS max_at
            FROM unnest(CAST(:tenants AS text[]), CAST(:products AS text[]), CAST(:weights AS float8[]),
                        CAST(:ats AS timestamptz[])) AS t(tenant_id, product_id, weight, at)
            WINDOW w AS (PARTITION BY t.tenant_id, t.product_id)
        ) x
        GROUP BY tenant_id, product_id, max_at
        ON CONFLICT (tenant_id, product_id) DO UPDATE SET
            -- both scores decayed to the later of their two times, so late events count right
            score = pp.score * exp(-:lam * extract(epoch FROM
                        (greatest(pp.updated_at, EXCLUDED.updated_at) - pp.updated_at)))
                  + EXCLUDED.score * exp(-:lam * extract(epoch FROM
                        (greatest(pp.updated_at, EXCLUDED.updated_at) - EXCLUDED.updated_at))),
            updated_at = greatest(pp.updated_at, EXCLUDED.updated_at)
    """),
        {
            "lam": lam,
            "tenants": [r[0] for r in rows],
            "products": [r[1] for r in rows],
            "weights": [WEIGHTS[r[2]] for r in rows],
            "ats": [r[3] for r in rows],
        },
    )
