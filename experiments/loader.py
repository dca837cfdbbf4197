"""The one I/O module: interaction events in Postgres -> per-arm sufficient statistics.

All aggregation runs inside Postgres (one round trip, a handful of rows back), so 10M
events never travel to Python. The unit is the user: a user's arm is the arm of their
exposures in the experiment; users exposed to more than one arm are excluded and counted
(`ExperimentStats.multi_arm_users`), as GrowthBook does with "multiple exposures".

Attribution (which clicks and purchases count for the arm) is an explicit parameter:
- mode "request": the click/purchase carries the request_id of one of that user's
  exposures in this experiment (exact, needs storefronts to echo request ids);
- mode "window": any click/purchase of the user within `window_hours` after their first
  exposure in the experiment (robust when purchases lose the request id).

Request attribution reads the rollup `experiment_users` / `experiment_user_days` (one row per
experiment and user / user and day, kept current by triggers on interaction_events: migration
0005) when it answers exactly,
and the raw events otherwise: window attribution, exposures outside [start, end), outcomes
before start - 1 h, a request shared by two experiments. Both give the same numbers
(tests/experiments/test_rollup.py); docs/experiments.md explains the design.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, fields, replace
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import text

from experiments.definition import ExperimentDefinition
from experiments.stats import ArmStats, DailyArmStats, ExperimentStats

log = logging.getLogger(__name__)

MULTIPLE = "__multiple__"  # pseudo-arm row carrying the count of multi-arm users
INEXACT = "__inexact__"  # pseudo-arm row: the rollup cannot answer these bounds exactly
SOURCES = ("auto", "rollup", "raw")
DEFAULT_PRE_PERIOD_DAYS = 14
# Money and per-user ratios are summed as numeric: exact, so the result does not depend on the
# order rows reach an aggregate (plans change with table statistics and parallel workers) and
# the rollup and the raw path agree to the last bit. Counts and their squares stay float8
# (integers below 2^53 are exact there too).
# Hash aggregates over millions of (request, user) groups spill to disk with the 4 MB
# default (10M events: 5M groups, ~370 MB in memory); set for the current transaction
# only (set_config(..., is_local => true)). Lower it if many reports run at once.
DEFAULT_WORK_MEM = "1GB"


@dataclass(frozen=True)
class Attribution:
    """Which clicks and purchases count for an exposed user's arm."""

    mode: str = "request"  # "request" | "window"
    window_hours: float = 24.0

    def __post_init__(self) -> None:
        if self.mode not in ("request", "window"):
            raise ValueError(f"attribution mode must be 'request' or 'window', got {self.mode!r}")
        if not (math.isfinite(self.window_hours) and self.window_hours > 0):
            raise ValueError(f"attribution window_hours must be > 0, got {self.window_hours!r}")


# Bounds of the analysis window on exposures (NULL = unbounded).
_BOUNDS = """(CAST(:start AS timestamptz) IS NULL OR occurred_at >= CAST(:start AS timestamptz))
      AND (CAST(:end AS timestamptz) IS NULL OR occurred_at < CAST(:end AS timestamptz))"""

# Outcomes before the start cannot belong to its exposures; one hour of slack absorbs
# clock skew between the storefront and the API. Keeps other experiments' history out.
_OUTCOME_FLOOR = """(CAST(:start AS timestamptz) IS NULL
                OR occurred_at >= CAST(:start AS timestamptz) - interval '1 hour')"""

# Exposures of the experiment, one row each, and one row per exposed user. min/max over
# arm use the C collation: byte comparison, several times faster than a locale's.
_EXPOSURES = f"""
exp_events AS MATERIALIZED (
    SELECT user_id, arm, request_id, occurred_at
    FROM interaction_events
    WHERE tenant_id = :tenant AND experiment = :key AND type = 'exposure' AND {_BOUNDS}
),
users AS (
    SELECT user_id, min(arm COLLATE "C") AS arm, min(arm COLLATE "C") <> max(arm COLLATE "C") AS multi,
           count(*) AS exposures, min(occurred_at) AS first_exposure
    FROM exp_events GROUP BY user_id
)"""

# Window-mode attributed outcome events, one row each (user_id, type, value, occurred_at).
_OUTCOMES = {
    "window": """
outcome_events AS (
    SELECT o.user_id, o.type, o.value, o.occurred_at
    FROM interaction_events o
    JOIN users u ON o.user_id = u.user_id
    WHERE o.tenant_id = :tenant AND o.type IN ('click', 'purchase')
      AND o.occurred_at >= u.first_exposure
      AND o.occurred_at < u.first_exposure + make_interval(secs => :window_s)
)""",
}

# Per-user totals (user_id, arm, multi, exposures, clicks, purchases, revenue, first_exposure).
# Request mode reads the table once: exposures and outcomes grouped by (request, user), so an
# outcome counts exactly when its request has an exposure of this user in the experiment.
_USER_TOTALS = {
    "request": f"""
per_request AS (
    SELECT request_id, user_id,
           count(*) FILTER (WHERE type = 'exposure') AS x,
           min(arm COLLATE "C") FILTER (WHERE type = 'exposure') AS arm_lo,
           max(arm COLLATE "C") FILTER (WHERE type = 'exposure') AS arm_hi,
           min(occurred_at) FILTER (WHERE type = 'exposure') AS first_exposure,
           count(*) FILTER (WHERE type = 'click') AS y,
           count(*) FILTER (WHERE type = 'purchase') AS purchases,
           sum(value::numeric) FILTER (WHERE type = 'purchase') AS rev
    FROM interaction_events
    WHERE tenant_id = :tenant
      AND ((type = 'exposure' AND experiment = :key AND {_BOUNDS})
           OR (type IN ('click', 'purchase') AND request_id IS NOT NULL AND {_OUTCOME_FLOOR}))
    GROUP BY request_id, user_id
),
users AS (
    SELECT user_id, min(arm_lo) AS arm, min(arm_lo) <> max(arm_hi) AS multi, sum(x) AS exposures,
           sum(y) AS clicks, sum(purchases) AS purchases, coalesce(sum(rev), 0) AS revenue,
           min(first_exposure) AS first_exposure
    FROM per_request
    -- exposures without a request id form a NULL group: their x counts, their outcomes cannot
    WHERE x > 0
    GROUP BY user_id
)""",
    "window": f"""
users AS (
    SELECT user_id, min(arm COLLATE "C") AS arm, min(arm COLLATE "C") <> max(arm COLLATE "C") AS multi,
           count(*) AS exposures, min(occurred_at) AS first_exposure
    FROM interaction_events
    WHERE tenant_id = :tenant AND experiment = :key AND type = 'exposure' AND {_BOUNDS}
    GROUP BY user_id
),
outcomes AS (
    SELECT o.user_id,
           count(*) FILTER (WHERE o.type = 'click') AS clicks,
           count(*) FILTER (WHERE o.type = 'purchase') AS purchases,
           coalesce(sum(o.value::numeric) FILTER (WHERE o.type = 'purchase'), 0) AS revenue
    FROM interaction_events o
    JOIN users u ON o.user_id = u.user_id
    WHERE o.tenant_id = :tenant AND o.type IN ('click', 'purchase')
      AND o.occurred_at >= u.first_exposure
      AND o.occurred_at < u.first_exposure + make_interval(secs => :window_s)
    GROUP BY o.user_id
)""",
}

# Pre-period activity of the same users (CUPED covariates): any event in the pre_days
# before the start (or before the first exposure when no start is known).
_PRE = """
pre_bounds AS (
    SELECT coalesce(CAST(:start AS timestamptz), (SELECT min(first_exposure) FROM users)) AS pre_end
),
pre AS (
    SELECT o.user_id,
           bool_or(o.type = 'purchase') AS pre_purchased,
           coalesce(sum(o.value::numeric) FILTER (WHERE o.type = 'purchase'), 0) AS pre_rev
    FROM interaction_events o
    JOIN users u ON o.user_id = u.user_id
    CROSS JOIN pre_bounds b
    WHERE :pre_days > 0 AND o.tenant_id = :tenant
      AND o.occurred_at >= b.pre_end - make_interval(days => :pre_days)
      AND o.occurred_at < b.pre_end
    GROUP BY o.user_id
)"""

_PER_USER = {
    "request": """
per_user AS (
    SELECT u.arm, u.exposures::float8 AS x, u.clicks::float8 AS y, u.purchases > 0 AS purchased,
           u.revenue AS rev, p.user_id IS NOT NULL AS pre_active,
           coalesce(p.pre_purchased, false) AS pre_purchased, coalesce(p.pre_rev, 0) AS pre_rev
    FROM users u
    LEFT JOIN pre p ON p.user_id = u.user_id
    WHERE NOT u.multi
)""",
    "window": """
per_user AS (
    SELECT u.arm, u.exposures::float8 AS x, coalesce(o.clicks, 0)::float8 AS y,
           coalesce(o.purchases, 0) > 0 AS purchased, coalesce(o.revenue, 0) AS rev,
           p.user_id IS NOT NULL AS pre_active, coalesce(p.pre_purchased, false) AS pre_purchased,
           coalesce(p.pre_rev, 0) AS pre_rev
    FROM users u
    LEFT JOIN outcomes o ON o.user_id = u.user_id
    LEFT JOIN pre p ON p.user_id = u.user_id
    WHERE NOT u.multi
)""",
}

_TOTALS = """
SELECT arm,
       count(*) AS users,
       sum(x) AS exposures, sum(x * x) AS exposures_sum_squares,
       sum(y) AS clicks, sum(y * y) AS clicks_sum_squares,
       sum(x * y) AS clicks_exposures_sum_products,
       count(*) FILTER (WHERE y > 0) AS clickers,
       sum(CASE WHEN y > 0 THEN y::numeric / x::numeric ELSE 0 END) AS click_rate_sum,
       sum(CASE WHEN y > 0 THEN (y * y)::numeric / (x * x)::numeric ELSE 0 END) AS click_rate_sum_squares,
       count(*) FILTER (WHERE purchased) AS purchasers,
       sum(rev) AS revenue_sum, sum(rev * rev) AS revenue_sum_squares,
       count(*) FILTER (WHERE pre_active) AS pre_active_users,
       count(*) FILTER (WHERE pre_purchased) AS pre_purchasers,
       count(*) FILTER (WHERE pre_purchased AND purchased) AS pre_and_post_purchasers,
       sum(pre_rev) AS pre_revenue_sum, sum(pre_rev * pre_rev) AS pre_revenue_sum_squares,
       sum(rev * pre_rev) AS revenue_pre_revenue_sum_products
FROM per_user GROUP BY arm
UNION ALL
SELECT :multiple AS arm, count(*) AS users, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
FROM users WHERE multi
"""

# The rollup's per-user totals: the same columns as the request-mode `users` above, plus the
# extremes that tell whether bounds would have filtered anything (then the raw path answers).
_ROLLUP_USERS = """
users AS (
    SELECT user_id, arm_lo AS arm, arm_lo <> arm_hi AS multi, exposures, clicks, purchases, revenue,
           first_exposure_at AS first_exposure, last_exposure_at AS last_exposure,
           first_outcome_at AS first_outcome
    FROM experiment_users
    WHERE tenant_id = :tenant AND experiment = :key
)"""

# True when [start, end) or the outcome floor would drop an exposure or an attributed outcome.
_ROLLUP_INEXACT = """(CAST(:start AS timestamptz) IS NOT NULL
        AND (min(first_exposure) < CAST(:start AS timestamptz)
             OR min(first_outcome) < CAST(:start AS timestamptz) - interval '1 hour'))
    OR (CAST(:end AS timestamptz) IS NOT NULL AND max(last_exposure) >= CAST(:end AS timestamptz))"""

_ROLLUP_CHECK = f"""
UNION ALL
SELECT :inexact AS arm, 1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL, NULL, NULL
FROM users HAVING {_ROLLUP_INEXACT}
"""

# Rollup rows are already per (user, day) with attributed outcomes, stored in (user, day) key
# order: one window pass (no sort, no lag) gives each day's cumulative state, and the previous
# state is the cumulative minus the day itself. Days before the user's first exposure (cx = 0)
# are folded into that day, whose previous state is "not in the experiment yet" (all zero),
# exactly as the raw series moves them there.
_ROLLUP_DAILY_SOURCE = """
rollup_cum AS (
    SELECT user_id, day, exposures AS x, clicks AS y, purchases AS p, revenue AS r,
           sum(exposures) OVER w AS cx, sum(clicks) OVER w AS cy, sum(purchases) OVER w AS cp,
           sum(revenue) OVER w AS cr
    FROM experiment_user_days
    WHERE tenant_id = :tenant AND experiment = :key
    WINDOW w AS (PARTITION BY user_id ORDER BY day ROWS UNBOUNDED PRECEDING)
),
deltas AS (
    SELECT user_id, day, cx = x AS first, cx, cy, cp, cr,
           CASE WHEN cx = x THEN 0 ELSE cx - x END AS px,
           CASE WHEN cx = x THEN 0 ELSE cy - y END AS py,
           CASE WHEN cx = x THEN 0 ELSE cp - p END AS pp,
           CASE WHEN cx = x THEN 0 ELSE cr - r END AS pr
    FROM rollup_cum WHERE cx > 0
)"""

_MIXED = "SELECT EXISTS (SELECT 1 FROM experiment_requests WHERE tenant_id = :tenant AND mixed)"

# Per-day cumulative stats: per user and day, the change of each per-user function
# (x, x^2, y/x, ...) since the user's previous active day; summing these changes over
# days <= D gives exactly the arm's sums as they stood at the end of day D.
# Per (user, day) event counts: user_day_events(user_id, day, x, y, purch, rev) next to
# users(user_id, arm, multi, first_exposure). Outcomes stamped before the user's first
# exposure (clock skew) count on the first exposure's day.
_DAILY_SOURCE = {
    "request": f"""
per_request_day AS (
    SELECT request_id, user_id, (occurred_at AT TIME ZONE 'UTC')::date AS day,
           count(*) FILTER (WHERE type = 'exposure') AS x,
           min(arm COLLATE "C") FILTER (WHERE type = 'exposure') AS arm_lo,
           max(arm COLLATE "C") FILTER (WHERE type = 'exposure') AS arm_hi,
           min(occurred_at) FILTER (WHERE type = 'exposure') AS first_exposure,
           count(*) FILTER (WHERE type = 'click') AS y,
           count(*) FILTER (WHERE type = 'purchase') AS purch,
           coalesce(sum(value::numeric) FILTER (WHERE type = 'purchase'), 0) AS rev
    FROM interaction_events
    WHERE tenant_id = :tenant
      AND ((type = 'exposure' AND experiment = :key AND {_BOUNDS})
           OR (type IN ('click', 'purchase') AND request_id IS NOT NULL AND {_OUTCOME_FLOOR}))
    GROUP BY request_id, user_id, day
),
attributed AS (
    SELECT *, sum(x) OVER (PARTITION BY request_id, user_id) AS request_x FROM per_request_day
),
users AS (
    SELECT user_id, min(arm_lo) AS arm, min(arm_lo) <> max(arm_hi) AS multi,
           min(first_exposure) AS first_exposure
    FROM per_request_day WHERE x > 0 GROUP BY user_id
),
user_day_events AS (
    SELECT a.user_id, greatest(a.day, (u.first_exposure AT TIME ZONE 'UTC')::date) AS day,
           a.x, a.y, a.purch, a.rev
    FROM attributed a JOIN users u ON u.user_id = a.user_id
    WHERE a.request_x > 0
)""",
    "window": ",".join([_EXPOSURES, _OUTCOMES["window"], """
user_day_events AS (
    SELECT e.user_id, (e.occurred_at AT TIME ZONE 'UTC')::date AS day,
           1 AS x, 0 AS y, 0 AS purch, 0::numeric AS rev
    FROM exp_events e
    UNION ALL
    SELECT o.user_id,
           greatest((o.occurred_at AT TIME ZONE 'UTC')::date, (u.first_exposure AT TIME ZONE 'UTC')::date),
           0, (o.type = 'click')::int, (o.type = 'purchase')::int,
           CASE WHEN o.type = 'purchase' THEN coalesce(o.value, 0)::numeric ELSE 0 END
    FROM outcome_events o JOIN users u ON u.user_id = o.user_id
)"""]),
}

_DAILY = """
user_days AS (
    SELECT d.user_id, d.day, sum(d.x) AS x, sum(d.y) AS y, sum(d.purch) AS purch, sum(d.rev) AS rev
    FROM user_day_events d JOIN users u ON u.user_id = d.user_id
    WHERE NOT u.multi
    GROUP BY d.user_id, d.day
),
cum AS (
    SELECT user_id, day,
           sum(x) OVER w::float8 AS cx, sum(y) OVER w::float8 AS cy,
           sum(purch) OVER w AS cp, sum(rev) OVER w AS cr,
           row_number() OVER w AS k
    FROM user_days WINDOW w AS (PARTITION BY user_id ORDER BY day)
),
deltas AS (
    SELECT user_id, day, k = 1 AS first, cx, cy, cp, cr,
           lag(cx, 1, 0::float8) OVER w AS px, lag(cy, 1, 0::float8) OVER w AS py,
           lag(cp, 1, 0::bigint) OVER w AS pp, lag(cr, 1, 0::numeric) OVER w AS pr
    FROM cum WINDOW w AS (PARTITION BY user_id ORDER BY day)
)"""

# Per (arm, day): the changes of every per-user function, summed (deltas: user_id, day, first,
# cumulative cx cy cp cr and previous px py pp pr).
_DAILY_SELECT = """
SELECT u.arm, d.day,
       count(*) FILTER (WHERE d.first) AS users,
       sum(d.cx - d.px) AS exposures, sum(d.cx * d.cx - d.px * d.px) AS exposures_sum_squares,
       sum(d.cy - d.py) AS clicks, sum(d.cy * d.cy - d.py * d.py) AS clicks_sum_squares,
       sum(d.cx * d.cy - d.px * d.py) AS clicks_exposures_sum_products,
       sum((d.cy > 0)::int - (d.py > 0)::int) AS clickers,
       sum(CASE WHEN d.cy > 0 THEN d.cy::numeric / d.cx::numeric ELSE 0 END
           - CASE WHEN d.py > 0 THEN d.py::numeric / d.px::numeric ELSE 0 END) AS click_rate_sum,
       sum(CASE WHEN d.cy > 0 THEN (d.cy * d.cy)::numeric / (d.cx * d.cx)::numeric ELSE 0 END
           - CASE WHEN d.py > 0 THEN (d.py * d.py)::numeric / (d.px * d.px)::numeric ELSE 0 END)
           AS click_rate_sum_squares,
       sum((d.cp > 0)::int - (d.pp > 0)::int) AS purchasers,
       sum(d.cr - d.pr) AS revenue_sum, sum(d.cr * d.cr - d.pr * d.pr) AS revenue_sum_squares,
       count(*) FILTER (WHERE d.first AND p.user_id IS NOT NULL) AS pre_active_users,
       count(*) FILTER (WHERE d.first AND p.pre_purchased) AS pre_purchasers,
       sum(CASE WHEN p.pre_purchased THEN (d.cp > 0)::int - (d.pp > 0)::int ELSE 0 END)
           AS pre_and_post_purchasers,
       sum(CASE WHEN d.first THEN coalesce(p.pre_rev, 0) ELSE 0 END) AS pre_revenue_sum,
       sum(CASE WHEN d.first THEN coalesce(p.pre_rev * p.pre_rev, 0) ELSE 0 END) AS pre_revenue_sum_squares,
       sum((d.cr - d.pr) * coalesce(p.pre_rev, 0)) AS revenue_pre_revenue_sum_products
FROM deltas d
JOIN users u ON u.user_id = d.user_id AND NOT u.multi
LEFT JOIN pre p ON p.user_id = d.user_id
GROUP BY u.arm, d.day
ORDER BY d.day, u.arm
"""


def _params(tenant_id: str, key: str, attribution: Attribution, start: datetime | None,
            end: datetime | None, pre_period_days: int) -> dict[str, Any]:
    return {"tenant": tenant_id, "key": key, "start": start, "end": end,
            "window_s": float(attribution.window_hours) * 3600.0,
            "pre_days": int(pre_period_days), "multiple": MULTIPLE, "inexact": INEXACT}


def totals_sql(attribution: Attribution) -> str:
    """The SQL of `load_arm_stats` for this attribution mode (for EXPLAIN and review)."""
    mode = attribution.mode
    return "WITH " + ",".join([_USER_TOTALS[mode], _PRE, _PER_USER[mode]]) + _TOTALS


def daily_sql(attribution: Attribution) -> str:
    """The SQL of `load_daily_stats` for this attribution mode."""
    return "WITH " + ",".join([_DAILY_SOURCE[attribution.mode], _PRE, _DAILY]) + _DAILY_SELECT


def rollup_totals_sql() -> str:
    """The SQL of `load_arm_stats` on the rollup (request attribution), with its exactness check row."""
    return "WITH " + ",".join([_ROLLUP_USERS, _PRE, _PER_USER["request"]]) + _TOTALS + _ROLLUP_CHECK


def rollup_daily_sql() -> str:
    """The SQL of `load_daily_stats` on the rollup (request attribution)."""
    return "WITH " + ",".join([_ROLLUP_USERS, _ROLLUP_DAILY_SOURCE, _PRE]) + _DAILY_SELECT


def rollup_exact(conn: Any, tenant_id: str, key: str, start: datetime | None = None,
                 end: datetime | None = None) -> bool:
    """True when the rollup gives exactly the raw path's request attribution for [start, end)."""
    if conn.execute(text(_MIXED), {"tenant": tenant_id}).scalar():
        return False
    return not conn.execute(text("WITH " + _ROLLUP_USERS + f" SELECT coalesce(bool_or(x), false) FROM "
                                 f"(SELECT {_ROLLUP_INEXACT} AS x FROM users) c"),
                            {"tenant": tenant_id, "key": key, "start": start, "end": end}).scalar()


def _check_source(source: str, attribution: Attribution) -> None:
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if source == "rollup" and attribution.mode != "request":
        raise ValueError("the rollup answers request attribution only")


def load_definition(conn: Any, tenant_id: str, key: str) -> ExperimentDefinition | None:
    """The experiment's definition from the `experiments` table, or None if it does not exist."""
    row = conn.execute(text(
        "SELECT key, arms, traffic_fraction, salt, hash_version, primary_metric, started_at, stopped_at "
        "FROM experiments WHERE tenant_id = :tenant AND key = :key"),
        {"tenant": tenant_id, "key": key}).mappings().first()
    if row is None:
        return None
    return ExperimentDefinition.from_row(
        row["key"], row["arms"], salt=row["salt"] or "", traffic_fraction=row["traffic_fraction"],
        hash_version=row["hash_version"], primary_metric=row["primary_metric"],
        started_at=row["started_at"], stopped_at=row["stopped_at"])


def load_planned_sample_size(conn: Any, tenant_id: str, key: str) -> int | None:
    """The experiment's planned total sample size (the sequential tuning parameter), if set."""
    return conn.execute(text("SELECT planned_sample_size FROM experiments WHERE tenant_id = :tenant AND key = :key"),
                        {"tenant": tenant_id, "key": key}).scalar()


def _tune(conn: Any, work_mem: str | None) -> None:
    if work_mem:
        conn.execute(text("SELECT set_config('work_mem', :wm, true)"), {"wm": work_mem})


def _daily_rows(conn: Any, rollup: bool, attribution: Attribution, params: dict[str, Any]) -> list:
    if not rollup:
        return conn.execute(text(daily_sql(attribution)), params).mappings().all()
    # Rollup rows arrive in time order, so the (user, day) primary key is uncorrelated with the
    # heap: walking it costs ~25 s at 5M rows against ~9 s for a scan and a sort (measured,
    # docs/experiments.md). The planner cannot see that; switch index scans off for this query.
    conn.execute(text("SELECT set_config('enable_indexscan', 'off', true)"))
    try:
        return conn.execute(text(rollup_daily_sql()), params).mappings().all()
    finally:
        conn.execute(text("SELECT set_config('enable_indexscan', 'on', true)"))


def _arm_stats(key: str, rows: list) -> ExperimentStats | None:
    multiple = 0
    arms = []
    for row in rows:
        if row["arm"] == INEXACT:
            return None
        if row["arm"] == MULTIPLE:
            multiple = int(row["users"])
        else:
            arms.append(ArmStats.from_mapping(row["arm"], dict(row)))
    return ExperimentStats(key=key, arms=tuple(sorted(arms, key=lambda a: a.arm)), multi_arm_users=multiple)


def _rollup_arm_stats(conn: Any, tenant_id: str, key: str, params: dict[str, Any]) -> ExperimentStats | None:
    """Request attribution from the rollup, or None when it cannot answer these bounds exactly."""
    if conn.execute(text(_MIXED), {"tenant": tenant_id}).scalar():
        return None
    return _arm_stats(key, conn.execute(text(rollup_totals_sql()), params).mappings().all())


def load_arm_stats(conn: Any, tenant_id: str, key: str, *, attribution: Attribution = Attribution(),
                   start: datetime | None = None, end: datetime | None = None,
                   pre_period_days: int = DEFAULT_PRE_PERIOD_DAYS,
                   work_mem: str | None = DEFAULT_WORK_MEM, source: str = "auto") -> ExperimentStats:
    """Per-arm sufficient statistics of exposures in [start, end) (None = unbounded).

    `conn` is a SQLAlchemy Connection or Session; the caller owns the transaction. `source`:
    "auto" reads the rollup when it is exact, else raw events; "rollup" raises ValueError when
    it is not exact; "raw" always aggregates raw events (the reference the rollup is tested against).
    """
    _check_source(source, attribution)
    _tune(conn, work_mem)
    params = _params(tenant_id, key, attribution, start, end, pre_period_days)
    if source != "raw" and attribution.mode == "request":
        stats = _rollup_arm_stats(conn, tenant_id, key, params)
        if stats is not None:
            return stats
        if source == "rollup":
            raise ValueError(f"the rollup cannot answer experiment {key!r} exactly for these bounds")
        log.info("experiment %s/%s: rollup not exact for these bounds, aggregating raw events", tenant_id, key)
    return _arm_stats(key, conn.execute(text(totals_sql(attribution)), params).mappings().all())


def load_daily_stats(conn: Any, tenant_id: str, key: str, *, attribution: Attribution = Attribution(),
                     start: datetime | None = None, end: datetime | None = None,
                     pre_period_days: int = DEFAULT_PRE_PERIOD_DAYS,
                     work_mem: str | None = DEFAULT_WORK_MEM, source: str = "auto") -> tuple[DailyArmStats, ...]:
    """Cumulative per-arm statistics at the end of each UTC day (what a daily peek saw).

    `source` as in `load_arm_stats`; "auto" checks exactness first (one more pass over the rollup).
    """
    _check_source(source, attribution)
    _tune(conn, work_mem)
    use_rollup = attribution.mode == "request" and source != "raw"
    if use_rollup and source == "auto":
        use_rollup = rollup_exact(conn, tenant_id, key, start, end)
    elif use_rollup and not rollup_exact(conn, tenant_id, key, start, end):
        raise ValueError(f"the rollup cannot answer experiment {key!r} exactly for these bounds")
    rows = _daily_rows(conn, use_rollup, attribution, _params(tenant_id, key, attribution, start, end, pre_period_days))
    return cumulate_daily([(r["arm"], r["day"], dict(r)) for r in rows])


def cumulate_daily(increments: list[tuple[str, date, dict]]) -> tuple[DailyArmStats, ...]:
    """Turn per-day increments into cumulative per-arm stats for every day in range (pure)."""
    if not increments:
        return ()
    arms = sorted({a for a, _, _ in increments})
    first, last = min(d for _, d, _ in increments), max(d for _, d, _ in increments)
    by_key = {(a, d): ArmStats.from_mapping(a, row) for a, d, row in increments}
    running = {a: ArmStats(arm=a) for a in arms}
    out: list[DailyArmStats] = []
    day = first
    while day <= last:
        for a in arms:
            inc = by_key.get((a, day))
            if inc is not None:
                running[a] = _add(running[a], inc)
            out.append(DailyArmStats(day, running[a]))
        day += timedelta(days=1)
    return tuple(out)


def _add(a: ArmStats, b: ArmStats) -> ArmStats:
    changes = {f.name: getattr(a, f.name) + getattr(b, f.name) for f in fields(ArmStats) if f.name != "arm"}
    return replace(a, **changes)


def load_experiment_stats(conn: Any, tenant_id: str, key: str, *, attribution: Attribution = Attribution(),
                          daily: bool = False, pre_period_days: int = DEFAULT_PRE_PERIOD_DAYS,
                          source: str = "auto") -> tuple[ExperimentDefinition | None, ExperimentStats]:
    """Definition plus stats, bounded by the experiment's started_at / stopped_at when set.

    `source` as in `load_arm_stats` ("auto": the rollup when exact, else raw events).
    """
    _check_source(source, attribution)
    definition = load_definition(conn, tenant_id, key)
    start = definition.started_at if definition else None
    end = definition.stopped_at if definition else None
    params = _params(tenant_id, key, attribution, start, end, pre_period_days)
    stats = None
    if attribution.mode == "request" and source != "raw":
        _tune(conn, DEFAULT_WORK_MEM)
        stats = _rollup_arm_stats(conn, tenant_id, key, params)
        if stats is None and source == "rollup":
            raise ValueError(f"the rollup cannot answer experiment {key!r} exactly for these bounds")
    # The totals query already checked exactness: the daily series reads the same source.
    used = "rollup" if stats is not None else "raw"
    if stats is None:
        if attribution.mode == "request" and source == "auto":
            log.info("experiment %s/%s: rollup not exact for these bounds, aggregating raw events", tenant_id, key)
        stats = load_arm_stats(conn, tenant_id, key, attribution=attribution, start=start, end=end,
                               pre_period_days=pre_period_days, source="raw")
    if daily:
        daily_rows = _daily_rows(conn, used == "rollup", attribution, params)
        stats = stats.with_daily(cumulate_daily([(r["arm"], r["day"], dict(r)) for r in daily_rows]))
    return definition, stats
