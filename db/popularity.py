"""Time-decayed product popularity, updated from interaction events, read by the baseline arm.

A score is valid at its `updated_at`; at a later time t it is worth score * 2^(-(t - updated_at) / half_life).
No stored time may break that arithmetic (#13: one click dated 2000-01-01 made every ranking of its
category answer 500), so every decay goes through `decay_sql`, which is bounded both ways:

- A time ahead of now counts as now. Writes clamp event times to the statement's `now()` (a click from
  a skewed clock, or dated 9999, is engagement now, not engagement that stays undecayed for ages), and
  an age below zero (a row written before that clamp) decays by 1, never by exp(+x), which overflows.
- Engagement older than HORIZON_HALF_LIVES half-lives is worth exactly 0: Postgres raises an error,
  not 0, when exp() or a product of floats underflows (exp(-x) beyond x ~ 745, 8.8 years at the
  default 3-day half-life). Below the horizon the factor is at least 2^-64 ~ 5e-20, and a score
  written here is at least the smallest weight (1; each write keeps the score of the later of its two
  times whole and adds the other's decayed part), so score x factor stays far above float8's smallest
  value (~1e-308). An exact 0 also makes long-gone engagement rank like none at all.

The alternative, log-scores relative to a reference time, would need a migration and still needs a
clamp where the score is read; a bounded factor keeps the stored meaning and the index as they were.
"""

from __future__ import annotations

import math
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

WEIGHTS = {"click": 1.0, "add_to_cart": 3.0, "purchase": 5.0}  # exposures do not count
# 2^-64 ~ 5e-20: a click this old is worth nothing to a ranking (192 days at the default half-life).
HORIZON_HALF_LIVES = 64


def decay_params(half_life_s: float) -> dict[str, float]:
    """The bind parameters `decay_sql` needs: :lam (per second) and :horizon_s."""
    return {"lam": math.log(2) / half_life_s, "horizon_s": HORIZON_HALF_LIVES * half_life_s}


def decay_sql(later: str, earlier: str) -> str:
    """SQL for the decay factor from `earlier` to a finite `later`: 1 if earlier is not before, 0 past the horizon.

    `earlier` is clamped into [later - horizon, later] before subtracting, so even an infinite stored
    time ('-infinity', 'infinity') gives an age in [0, horizon] on every Postgres version (before 17,
    subtracting an infinite timestamp raises "interval out of range").
    """
    clamped = f"least(greatest({earlier}, ({later}) - make_interval(secs => :horizon_s)), {later})"
    age = f"extract(epoch FROM ({later}) - {clamped})"
    return f"(CASE WHEN {age} >= :horizon_s THEN 0.0 ELSE exp(-:lam * {age}) END)"


def add_engagement(session: Session, rows: list[tuple[str, str, str, datetime]], half_life_s: float) -> None:
    """Fold (tenant, product, event type, occurred_at) rows into the decayed scores, one statement."""
    rows = [r for r in rows if r[2] in WEIGHTS and r[1]]
    if not rows:
        return
    # Decay the stored score to the new event's time, then add its weight (per row, in time order,
    # aggregated first so one statement touches each product once). Every time is clamped to now().
    session.execute(
        text(f"""
        INSERT INTO product_popularity AS pp (tenant_id, product_id, score, updated_at)
        SELECT tenant_id, product_id, sum(weight * {decay_sql("max_at", "at")}), max_at
        FROM (
            SELECT t.tenant_id, t.product_id, t.weight, least(t.at, now()) AS at,
                   max(least(t.at, now())) OVER w AS max_at
            FROM unnest(CAST(:tenants AS text[]), CAST(:products AS text[]), CAST(:weights AS float8[]),
                        CAST(:ats AS timestamptz[])) AS t(tenant_id, product_id, weight, at)
            WINDOW w AS (PARTITION BY t.tenant_id, t.product_id)
        ) x
        GROUP BY tenant_id, product_id, max_at
        ON CONFLICT (tenant_id, product_id) DO UPDATE SET
            -- both scores decayed to the later of their two times, so late events count right
            score = pp.score * {
            decay_sql("greatest(least(pp.updated_at, now()), EXCLUDED.updated_at)", "pp.updated_at")
        }
                  + EXCLUDED.score * {
            decay_sql("greatest(least(pp.updated_at, now()), EXCLUDED.updated_at)", "EXCLUDED.updated_at")
        },
            updated_at = greatest(least(pp.updated_at, now()), EXCLUDED.updated_at)
    """),
        {
            **decay_params(half_life_s),
            "tenants": [r[0] for r in rows],
            "products": [r[1] for r in rows],
            "weights": [WEIGHTS[r[2]] for r in rows],
            "ats": [r[3] for r in rows],
        },
    )
