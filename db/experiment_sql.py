"""The SQL that turns interaction events into per-arm sufficient statistics (text only: no I/O here).

Every aggregation runs inside Postgres (one round trip, a handful of rows back), so 10M events
never travel to Python; `db/experiment_stats.py` runs these queries and picks the source. Two
sources answer the same question:
- raw `interaction_events`: any attribution, any bounds (the reference);
- the rollup `experiment_users` / `experiment_user_days` (one row per experiment and user / user
  and day, kept current by triggers on interaction_events: migration 0005): request attribution,
  when no exposure or attributed outcome falls outside the bounds (`rollup_totals_sql` returns an
  `INEXACT` row, `rollup_inexact_sql` true, when one does).
Both give the same numbers to the last bit (tests/experiments/test_rollup.py); docs/experiments.md
explains the design.
"""

from __future__ import annotations

from experiments.analysis import Attribution

MULTIPLE = "__multiple__"  # pseudo-arm row carrying the count of multi-arm users
INEXACT = "__inexact__"  # pseudo-arm row: the rollup cannot answer these bounds exactly
# Money and per-user ratios are summed as numeric: exact, so the result does not depend on the
# order rows reach an aggregate (plans change with table statistics and parallel workers) and
# the rollup and the raw path agree to the last bit. Counts and their squares stay float8
# (integers below 2^53 are exact there too).

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
# before the start (or before the first exposure when no start is known). Exposures and clicks
# count whatever experiment (or none) they belong to: the user's pre-period CTR is the covariate of CTR.
_PRE = """
pre_bounds AS (
    SELECT coalesce(CAST(:start AS timestamptz), (SELECT min(first_exposure) FROM users)) AS pre_end
),
pre AS (
    SELECT o.user_id,
           bool_or(o.type = 'purchase') AS pre_purchased,
           coalesce(sum(o.value::numeric) FILTER (WHERE o.type = 'purchase'), 0) AS pre_rev,
           count(*) FILTER (WHERE o.type = 'exposure') AS pre_x,
           count(*) FILTER (WHERE o.type = 'click') AS pre_y
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
           coalesce(p.pre_purchased, false) AS pre_purchased, coalesce(p.pre_rev, 0) AS pre_rev,
           coalesce(p.pre_x, 0)::float8 AS pre_x, coalesce(p.pre_y, 0)::float8 AS pre_y
    FROM users u
    LEFT JOIN pre p ON p.user_id = u.user_id
    WHERE NOT u.multi
)""",
    "window": """
per_user AS (
    SELECT u.arm, u.exposures::float8 AS x, coalesce(o.clicks, 0)::float8 AS y,
           coalesce(o.purchases, 0) > 0 AS purchased, coalesce(o.revenue, 0) AS rev,
           p.user_id IS NOT NULL AS pre_active, coalesce(p.pre_purchased, false) AS pre_purchased,
           coalesce(p.pre_rev, 0) AS pre_rev, coalesce(p.pre_x, 0)::float8 AS pre_x,
           coalesce(p.pre_y, 0)::float8 AS pre_y
    FROM users u
    LEFT JOIN outcomes o ON o.user_id = u.user_id
    LEFT JOIN pre p ON p.user_id = u.user_id
    WHERE NOT u.multi
)""",
}

# The revenue cap (issue #17): :cap_p's percentile of every analysed user's revenue, both arms, zeros included
# (GrowthBook's percentile capping; percentile_cont = numpy's linear quantile, experiments.capping.Capping.cap).
# NULL :cap_p = no cap: least() ignores a NULL, so the capped sums are then the plain ones.
_MORE_NULLS = ", NULL" * 9  # the CUPED-for-CTR columns of the pseudo-arm rows
_TOTALS = f""",
revenue_cap AS (
    SELECT CASE WHEN CAST(:cap_p AS float8) IS NULL THEN NULL
                ELSE percentile_cont(coalesce(CAST(:cap_p AS float8), 1)) WITHIN GROUP (ORDER BY rev::float8)
           END AS cap
    FROM per_user
)
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
       sum(rev * pre_rev) AS revenue_pre_revenue_sum_products,
       sum(least(rev, CAST(c.cap AS numeric))) AS capped_revenue_sum,
       sum(least(rev, CAST(c.cap AS numeric)) * least(rev, CAST(c.cap AS numeric))) AS capped_revenue_sum_squares,
       sum(least(rev, CAST(c.cap AS numeric)) * pre_rev) AS capped_revenue_pre_revenue_sum_products,
       sum(pre_x) AS pre_exposures_sum, sum(pre_x * pre_x) AS pre_exposures_sum_squares,
       sum(pre_y) AS pre_clicks_sum, sum(pre_y * pre_y) AS pre_clicks_sum_squares,
       sum(pre_x * pre_y) AS pre_clicks_pre_exposures_sum_products,
       sum(x * pre_x) AS exposures_pre_exposures_sum_products, sum(x * pre_y) AS exposures_pre_clicks_sum_products,
       sum(y * pre_x) AS clicks_pre_exposures_sum_products, sum(y * pre_y) AS clicks_pre_clicks_sum_products,
       max(c.cap) AS revenue_cap
FROM per_user CROSS JOIN revenue_cap c GROUP BY arm
UNION ALL
SELECT :multiple AS arm, count(*) AS users, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL{_MORE_NULLS}
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
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL{_MORE_NULLS}
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

# A request with exposures of two experiments (anywhere in the tenant): the rollup cannot tell which
# experiment its outcomes belong to, so the raw events answer.
MIXED_SQL = "SELECT EXISTS (SELECT 1 FROM experiment_requests WHERE tenant_id = :tenant AND mixed)"

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
    "window": ",".join(
        [
            _EXPOSURES,
            _OUTCOMES["window"],
            """
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
)""",
        ]
    ),
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
       sum((d.cr - d.pr) * coalesce(p.pre_rev, 0)) AS revenue_pre_revenue_sum_products,
       sum(least(d.cr, c.cap) - least(d.pr, c.cap)) AS capped_revenue_sum,
       sum(least(d.cr, c.cap) * least(d.cr, c.cap) - least(d.pr, c.cap) * least(d.pr, c.cap))
           AS capped_revenue_sum_squares,
       sum((least(d.cr, c.cap) - least(d.pr, c.cap)) * coalesce(p.pre_rev, 0))
           AS capped_revenue_pre_revenue_sum_products,
       sum(CASE WHEN d.first THEN coalesce(p.pre_x, 0) ELSE 0 END) AS pre_exposures_sum,
       sum(CASE WHEN d.first THEN coalesce(p.pre_x * p.pre_x, 0) ELSE 0 END) AS pre_exposures_sum_squares,
       sum(CASE WHEN d.first THEN coalesce(p.pre_y, 0) ELSE 0 END) AS pre_clicks_sum,
       sum(CASE WHEN d.first THEN coalesce(p.pre_y * p.pre_y, 0) ELSE 0 END) AS pre_clicks_sum_squares,
       sum(CASE WHEN d.first THEN coalesce(p.pre_x * p.pre_y, 0) ELSE 0 END) AS pre_clicks_pre_exposures_sum_products,
       sum((d.cx - d.px) * coalesce(p.pre_x, 0)) AS exposures_pre_exposures_sum_products,
       sum((d.cx - d.px) * coalesce(p.pre_y, 0)) AS exposures_pre_clicks_sum_products,
       sum((d.cy - d.py) * coalesce(p.pre_x, 0)) AS clicks_pre_exposures_sum_products,
       sum((d.cy - d.py) * coalesce(p.pre_y, 0)) AS clicks_pre_clicks_sum_products
FROM deltas d
JOIN users u ON u.user_id = d.user_id AND NOT u.multi
LEFT JOIN pre p ON p.user_id = d.user_id
-- the totals' cap, applied to each user's cumulative revenue: at the last day the capped sums telescope to
-- exactly the totals' (a NULL cap leaves least() the plain revenue)
CROSS JOIN (SELECT CAST(CAST(:cap AS float8) AS numeric) AS cap) c
GROUP BY u.arm, d.day
ORDER BY d.day, u.arm
"""


def totals_sql(attribution: Attribution) -> str:
    """Per-arm totals from raw events for this attribution mode, plus the `MULTIPLE` row."""
    mode = attribution.mode
    return "WITH " + ",".join([_USER_TOTALS[mode], _PRE, _PER_USER[mode]]) + _TOTALS


def daily_sql(attribution: Attribution) -> str:
    """Per (arm, UTC day) increments of the totals from raw events for this attribution mode."""
    return "WITH " + ",".join([_DAILY_SOURCE[attribution.mode], _PRE, _DAILY]) + _DAILY_SELECT


def rollup_totals_sql() -> str:
    """`totals_sql` (request attribution) on the rollup, plus an `INEXACT` row when the bounds would filter."""
    return "WITH " + ",".join([_ROLLUP_USERS, _PRE, _PER_USER["request"]]) + _TOTALS + _ROLLUP_CHECK


def rollup_daily_sql() -> str:
    """`daily_sql` (request attribution) on the rollup."""
    return "WITH " + ",".join([_ROLLUP_USERS, _ROLLUP_DAILY_SOURCE, _PRE]) + _DAILY_SELECT


def rollup_inexact_sql() -> str:
    """One boolean: true when [start, end) or the outcome floor would drop something the rollup counted."""
    return (
        "WITH " + _ROLLUP_USERS + f" SELECT coalesce(bool_or(x), false) FROM "
        f"(SELECT {_ROLLUP_INEXACT} AS x FROM users) c"
    )
