"""experiment rollup: per (experiment, user, day) sums kept current by triggers on interaction_events

Request attribution (a click or purchase counts for an arm when its request id carries an
exposure of the same user in the experiment) is resolved at write time, so the analysis reads
one row per user and day instead of grouping every raw event by request:

- experiment_requests: one row per (tenant, request, user) that has an exposure in an
  experiment or an outcome (click, purchase). Its row lock serialises every writer of that
  request, so an exposure and a click arriving concurrently (in either order) are attributed
  exactly once.
- experiment_pending_outcomes: outcomes of requests with no exposure yet (exposures are
  buffered by the API and may arrive after the click), per day; moved into the rollup when
  the exposure arrives.
- experiment_user_days: per (tenant, experiment, user, UTC day) exposures, arms, first/last
  exposure time, attributed clicks, purchases, revenue and first outcome time (the daily series);
- experiment_users: the same per (tenant, experiment, user) (the totals).
User ids sort in byte order (COLLATE "C"): the daily series scans a user's days in key order.

Statement-level AFTER triggers with transition tables maintain them for every writer (the
interactions agent's INSERT .. ON CONFLICT DO NOTHING, the benchmark's bulk INSERT, COPY).
Deletes and updates (rare: benchmark clean-up, erasure, tenant deletion) recompute the touched
requests and experiments from the raw events. The upgrade backfills from existing events.

Revision ID: 0005
Revises: 0004
"""
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# Hash aggregates of a bulk insert (10M events: 5M requests) stay in memory; one
# benchmark-sized statement at a time, so the peak is bounded.
TRIGGER_WORK_MEM = "256MB"

TABLES = """
CREATE TABLE experiment_requests (
    tenant_id varchar(64) NOT NULL,
    request_id varchar(64) NOT NULL,
    user_id varchar(255) NOT NULL,
    experiment varchar(128),               -- least experiment of its exposures; NULL: none yet
    exposures integer NOT NULL DEFAULT 0,  -- exposures with an experiment
    mixed boolean NOT NULL DEFAULT false,  -- exposures of more than one experiment
    PRIMARY KEY (tenant_id, request_id, user_id)
);
-- The loader falls back to raw events for a tenant with such requests (not made by the API).
CREATE INDEX ix_experiment_requests_mixed ON experiment_requests (tenant_id) WHERE mixed;

CREATE TABLE experiment_pending_outcomes (
    tenant_id varchar(64) NOT NULL,
    request_id varchar(64) NOT NULL,
    user_id varchar(255) NOT NULL,
    day date NOT NULL,                     -- UTC day of the outcome
    clicks integer NOT NULL,
    purchases integer NOT NULL,
    revenue numeric NOT NULL,
    first_outcome_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, request_id, user_id, day)
);

CREATE TABLE experiment_user_days (
    tenant_id varchar(64) NOT NULL,
    experiment varchar(128) NOT NULL,
    user_id varchar(255) COLLATE "C" NOT NULL,
    day date NOT NULL,                     -- UTC day of the exposures and outcomes counted here
    exposures integer NOT NULL,
    arm_lo varchar(64) COLLATE "C",        -- least / greatest arm of these exposures (byte order)
    arm_hi varchar(64) COLLATE "C",
    first_exposure_at timestamptz,
    last_exposure_at timestamptz,
    clicks integer NOT NULL,               -- attributed by request id
    purchases integer NOT NULL,
    revenue numeric NOT NULL,
    first_outcome_at timestamptz,
    PRIMARY KEY (tenant_id, experiment, user_id, day)
);

CREATE TABLE experiment_users (
    tenant_id varchar(64) NOT NULL,
    experiment varchar(128) NOT NULL,
    user_id varchar(255) COLLATE "C" NOT NULL,
    exposures integer NOT NULL,
    arm_lo varchar(64) COLLATE "C",
    arm_hi varchar(64) COLLATE "C",
    first_exposure_at timestamptz,
    last_exposure_at timestamptz,
    clicks integer NOT NULL,
    purchases integer NOT NULL,
    revenue numeric NOT NULL,
    first_outcome_at timestamptz,
    PRIMARY KEY (tenant_id, experiment, user_id)
);
"""

# One statement-level trigger per operation; new_rows / old_rows are the transition tables.
INSERT_FUNCTION = f"""
CREATE FUNCTION experiment_rollup_insert() RETURNS trigger LANGUAGE plpgsql
SET work_mem = '{TRIGGER_WORK_MEM}' AS $fn$
BEGIN
    -- 1. Create or lock the request rows in key order (no deadlock between writers). A row
    --    only touched by outcomes is locked, not rewritten (ON CONFLICT locks every row).
    INSERT INTO experiment_requests AS r (tenant_id, request_id, user_id, experiment, exposures, mixed)
    SELECT tenant_id, request_id, user_id,
           min(experiment) FILTER (WHERE type = 'exposure'),
           count(*) FILTER (WHERE type = 'exposure' AND experiment IS NOT NULL),
           count(DISTINCT experiment) FILTER (WHERE type = 'exposure') > 1
    FROM new_rows
    WHERE request_id IS NOT NULL
      AND (type IN ('click', 'purchase') OR (type = 'exposure' AND experiment IS NOT NULL))
    GROUP BY tenant_id, request_id, user_id
    ORDER BY tenant_id, request_id, user_id
    ON CONFLICT (tenant_id, request_id, user_id) DO UPDATE
    SET exposures = r.exposures + excluded.exposures,
        experiment = LEAST(r.experiment, excluded.experiment),
        mixed = r.mixed OR excluded.mixed
                OR (r.experiment IS NOT NULL AND excluded.experiment IS NOT NULL
                    AND r.experiment <> excluded.experiment)
    WHERE excluded.exposures > 0;

    -- 2. A new statement, hence a new snapshot: it sees what earlier holders of these row
    --    locks committed. Outcomes of exposed requests go to the rollup, the others wait in
    --    experiment_pending_outcomes; requests exposed by this batch release their waiting ones.
    --    Every join probes a primary key: the transition table and CTEs have no statistics,
    --    and a join between two of them can turn into a nested loop over both (1M events: minutes).
    WITH exposed_now AS (
        SELECT DISTINCT tenant_id, request_id, user_id
        FROM new_rows WHERE type = 'exposure' AND experiment IS NOT NULL AND request_id IS NOT NULL
    ),
    released AS (
        DELETE FROM experiment_pending_outcomes p USING exposed_now b, experiment_requests r
        WHERE r.tenant_id = b.tenant_id AND r.request_id = b.request_id AND r.user_id = b.user_id
          AND r.exposures > 0
          AND p.tenant_id = b.tenant_id AND p.request_id = b.request_id AND p.user_id = b.user_id
        RETURNING p.tenant_id, r.experiment, p.user_id, p.day, p.clicks, p.purchases, p.revenue,
                  p.first_outcome_at
    ),
    outcomes AS (
        SELECT n.tenant_id, n.request_id, n.user_id, (n.occurred_at AT TIME ZONE 'UTC')::date AS day,
               n.type, n.value, n.occurred_at, r.experiment, r.exposures > 0 AS exposed
        FROM new_rows n
        JOIN experiment_requests r
          ON r.tenant_id = n.tenant_id AND r.request_id = n.request_id AND r.user_id = n.user_id
        WHERE n.type IN ('click', 'purchase') AND n.request_id IS NOT NULL
    ),
    pending AS (
        INSERT INTO experiment_pending_outcomes AS p
            (tenant_id, request_id, user_id, day, clicks, purchases, revenue, first_outcome_at)
        SELECT tenant_id, request_id, user_id, day,
               count(*) FILTER (WHERE type = 'click'), count(*) FILTER (WHERE type = 'purchase'),
               coalesce(sum(value::numeric) FILTER (WHERE type = 'purchase'), 0), min(occurred_at)
        FROM outcomes WHERE NOT exposed
        GROUP BY tenant_id, request_id, user_id, day
        ORDER BY tenant_id, request_id, user_id, day
        ON CONFLICT (tenant_id, request_id, user_id, day) DO UPDATE
        SET clicks = p.clicks + excluded.clicks, purchases = p.purchases + excluded.purchases,
            revenue = p.revenue + excluded.revenue,
            first_outcome_at = LEAST(p.first_outcome_at, excluded.first_outcome_at)
    ),
    deltas AS (
        SELECT tenant_id, experiment, user_id, (occurred_at AT TIME ZONE 'UTC')::date AS day,
               1 AS exposures, arm, occurred_at AS exposed_at,
               0 AS clicks, 0 AS purchases, 0::numeric AS revenue, NULL::timestamptz AS outcome_at
        FROM new_rows WHERE type = 'exposure' AND experiment IS NOT NULL
        UNION ALL
        SELECT tenant_id, experiment, user_id, day, 0, NULL, NULL,
               (type = 'click')::int, (type = 'purchase')::int,
               CASE WHEN type = 'purchase' THEN coalesce(value, 0)::numeric ELSE 0 END, occurred_at
        FROM outcomes WHERE exposed
        UNION ALL
        SELECT tenant_id, experiment, user_id, day, 0, NULL, NULL, clicks, purchases, revenue,
               first_outcome_at
        FROM released
    ),
    days AS (
        INSERT INTO experiment_user_days AS d
            (tenant_id, experiment, user_id, day, exposures, arm_lo, arm_hi, first_exposure_at,
             last_exposure_at, clicks, purchases, revenue, first_outcome_at)
        SELECT tenant_id, experiment, user_id, day, sum(exposures), min(arm COLLATE "C"), max(arm COLLATE "C"),
               min(exposed_at), max(exposed_at), sum(clicks), sum(purchases), sum(revenue), min(outcome_at)
        FROM deltas
        GROUP BY tenant_id, experiment, user_id, day
        ORDER BY tenant_id, experiment, user_id, day
        ON CONFLICT (tenant_id, experiment, user_id, day) DO UPDATE
        SET exposures = d.exposures + excluded.exposures,
            arm_lo = LEAST(d.arm_lo, excluded.arm_lo), arm_hi = GREATEST(d.arm_hi, excluded.arm_hi),
            first_exposure_at = LEAST(d.first_exposure_at, excluded.first_exposure_at),
            last_exposure_at = GREATEST(d.last_exposure_at, excluded.last_exposure_at),
            clicks = d.clicks + excluded.clicks, purchases = d.purchases + excluded.purchases,
            revenue = d.revenue + excluded.revenue,
            first_outcome_at = LEAST(d.first_outcome_at, excluded.first_outcome_at)
    )
    INSERT INTO experiment_users AS t
        (tenant_id, experiment, user_id, exposures, arm_lo, arm_hi, first_exposure_at,
         last_exposure_at, clicks, purchases, revenue, first_outcome_at)
    SELECT tenant_id, experiment, user_id, sum(exposures), min(arm COLLATE "C"), max(arm COLLATE "C"),
           min(exposed_at), max(exposed_at), sum(clicks), sum(purchases), sum(revenue), min(outcome_at)
    FROM deltas
    GROUP BY tenant_id, experiment, user_id
    ORDER BY tenant_id, experiment, user_id
    ON CONFLICT (tenant_id, experiment, user_id) DO UPDATE
    SET exposures = t.exposures + excluded.exposures,
        arm_lo = LEAST(t.arm_lo, excluded.arm_lo), arm_hi = GREATEST(t.arm_hi, excluded.arm_hi),
        first_exposure_at = LEAST(t.first_exposure_at, excluded.first_exposure_at),
        last_exposure_at = GREATEST(t.last_exposure_at, excluded.last_exposure_at),
        clicks = t.clicks + excluded.clicks, purchases = t.purchases + excluded.purchases,
        revenue = t.revenue + excluded.revenue,
        first_outcome_at = LEAST(t.first_outcome_at, excluded.first_outcome_at);
    RETURN NULL;
END
$fn$;
"""

# Recompute the requests in experiment_rollup_keys and the experiments in
# experiment_rollup_experiments (temporary tables filled by the caller) from raw events.
REBUILD_FUNCTION = f"""
CREATE FUNCTION experiment_rollup_rebuild() RETURNS void LANGUAGE plpgsql
SET work_mem = '{TRIGGER_WORK_MEM}' AS $fn$
BEGIN
    INSERT INTO experiment_rollup_experiments (tenant_id, experiment)
    SELECT DISTINCT r.tenant_id, r.experiment FROM experiment_requests r
    JOIN experiment_rollup_keys k
      ON k.tenant_id = r.tenant_id AND k.request_id = r.request_id AND k.user_id = r.user_id
    WHERE r.experiment IS NOT NULL;

    DELETE FROM experiment_requests r USING experiment_rollup_keys k
    WHERE k.tenant_id = r.tenant_id AND k.request_id = r.request_id AND k.user_id = r.user_id;
    DELETE FROM experiment_pending_outcomes p USING experiment_rollup_keys k
    WHERE k.tenant_id = p.tenant_id AND k.request_id = p.request_id AND k.user_id = p.user_id;

    INSERT INTO experiment_requests (tenant_id, request_id, user_id, experiment, exposures, mixed)
    SELECT e.tenant_id, e.request_id, e.user_id,
           min(e.experiment) FILTER (WHERE e.type = 'exposure'),
           count(*) FILTER (WHERE e.type = 'exposure' AND e.experiment IS NOT NULL),
           count(DISTINCT e.experiment) FILTER (WHERE e.type = 'exposure') > 1
    FROM interaction_events e
    JOIN experiment_rollup_keys k
      ON k.tenant_id = e.tenant_id AND k.request_id = e.request_id AND k.user_id = e.user_id
    WHERE e.type IN ('click', 'purchase') OR (e.type = 'exposure' AND e.experiment IS NOT NULL)
    GROUP BY e.tenant_id, e.request_id, e.user_id;

    INSERT INTO experiment_pending_outcomes
        (tenant_id, request_id, user_id, day, clicks, purchases, revenue, first_outcome_at)
    SELECT e.tenant_id, e.request_id, e.user_id, (e.occurred_at AT TIME ZONE 'UTC')::date,
           count(*) FILTER (WHERE e.type = 'click'), count(*) FILTER (WHERE e.type = 'purchase'),
           coalesce(sum(e.value::numeric) FILTER (WHERE e.type = 'purchase'), 0), min(e.occurred_at)
    FROM interaction_events e
    JOIN experiment_requests r
      ON r.tenant_id = e.tenant_id AND r.request_id = e.request_id AND r.user_id = e.user_id
    JOIN experiment_rollup_keys k
      ON k.tenant_id = e.tenant_id AND k.request_id = e.request_id AND k.user_id = e.user_id
    WHERE e.type IN ('click', 'purchase') AND r.exposures = 0
    GROUP BY 1, 2, 3, 4;

    INSERT INTO experiment_rollup_experiments (tenant_id, experiment)
    SELECT DISTINCT r.tenant_id, r.experiment FROM experiment_requests r
    JOIN experiment_rollup_keys k
      ON k.tenant_id = r.tenant_id AND k.request_id = r.request_id AND k.user_id = r.user_id
    WHERE r.experiment IS NOT NULL;

    DELETE FROM experiment_user_days d
    USING (SELECT DISTINCT tenant_id, experiment FROM experiment_rollup_experiments) x
    WHERE d.tenant_id = x.tenant_id AND d.experiment = x.experiment;

    INSERT INTO experiment_user_days
        (tenant_id, experiment, user_id, day, exposures, arm_lo, arm_hi, first_exposure_at,
         last_exposure_at, clicks, purchases, revenue, first_outcome_at)
    SELECT tenant_id, experiment, user_id, day, sum(exposures), min(arm_lo), max(arm_hi),
           min(first_exposure_at), max(last_exposure_at), sum(clicks), sum(purchases), sum(revenue),
           min(first_outcome_at)
    FROM (
        SELECT e.tenant_id, e.experiment, e.user_id, (e.occurred_at AT TIME ZONE 'UTC')::date AS day,
               count(*) AS exposures, min(e.arm COLLATE "C") AS arm_lo, max(e.arm COLLATE "C") AS arm_hi,
               min(e.occurred_at) AS first_exposure_at, max(e.occurred_at) AS last_exposure_at,
               0 AS clicks, 0 AS purchases, 0::numeric AS revenue, NULL::timestamptz AS first_outcome_at
        FROM interaction_events e
        WHERE e.type = 'exposure'
          AND (e.tenant_id, e.experiment) IN (SELECT tenant_id, experiment FROM experiment_rollup_experiments)
        GROUP BY 1, 2, 3, 4
        UNION ALL
        SELECT o.tenant_id, r.experiment, o.user_id, (o.occurred_at AT TIME ZONE 'UTC')::date,
               0, NULL, NULL, NULL, NULL,
               count(*) FILTER (WHERE o.type = 'click'), count(*) FILTER (WHERE o.type = 'purchase'),
               coalesce(sum(o.value::numeric) FILTER (WHERE o.type = 'purchase'), 0), min(o.occurred_at)
        FROM experiment_requests r
        JOIN interaction_events o
          ON o.tenant_id = r.tenant_id AND o.request_id = r.request_id AND o.user_id = r.user_id
        WHERE r.exposures > 0 AND o.type IN ('click', 'purchase')
          AND (r.tenant_id, r.experiment) IN (SELECT tenant_id, experiment FROM experiment_rollup_experiments)
        GROUP BY 1, 2, 3, 4
    ) s
    GROUP BY tenant_id, experiment, user_id, day;

    DELETE FROM experiment_users t
    USING (SELECT DISTINCT tenant_id, experiment FROM experiment_rollup_experiments) x
    WHERE t.tenant_id = x.tenant_id AND t.experiment = x.experiment;

    INSERT INTO experiment_users
        (tenant_id, experiment, user_id, exposures, arm_lo, arm_hi, first_exposure_at,
         last_exposure_at, clicks, purchases, revenue, first_outcome_at)
    SELECT tenant_id, experiment, user_id, sum(exposures), min(arm_lo), max(arm_hi),
           min(first_exposure_at), max(last_exposure_at), sum(clicks), sum(purchases), sum(revenue),
           min(first_outcome_at)
    FROM experiment_user_days
    WHERE (tenant_id, experiment) IN (SELECT tenant_id, experiment FROM experiment_rollup_experiments)
    GROUP BY tenant_id, experiment, user_id;
END
$fn$;
"""

# Deletes and updates: the touched requests and experiments are recomputed from raw events.
CHANGE_FUNCTION = """
CREATE FUNCTION experiment_rollup_change() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    CREATE TEMP TABLE IF NOT EXISTS experiment_rollup_keys
        (tenant_id text, request_id text, user_id text) ON COMMIT DROP;
    CREATE TEMP TABLE IF NOT EXISTS experiment_rollup_experiments
        (tenant_id text, experiment text) ON COMMIT DROP;
    TRUNCATE experiment_rollup_keys, experiment_rollup_experiments;
    INSERT INTO experiment_rollup_keys
    SELECT DISTINCT tenant_id, request_id, user_id FROM old_rows WHERE request_id IS NOT NULL;
    INSERT INTO experiment_rollup_experiments
    SELECT DISTINCT tenant_id, experiment FROM old_rows WHERE type = 'exposure' AND experiment IS NOT NULL;
    IF TG_OP = 'UPDATE' THEN
        INSERT INTO experiment_rollup_keys
        SELECT DISTINCT tenant_id, request_id, user_id FROM new_rows WHERE request_id IS NOT NULL;
        INSERT INTO experiment_rollup_experiments
        SELECT DISTINCT tenant_id, experiment FROM new_rows WHERE type = 'exposure' AND experiment IS NOT NULL;
    END IF;
    ANALYZE experiment_rollup_keys;
    PERFORM experiment_rollup_rebuild();
    RETURN NULL;
END
$fn$;

CREATE FUNCTION experiment_rollup_truncate() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    TRUNCATE experiment_requests, experiment_pending_outcomes, experiment_user_days, experiment_users;
    RETURN NULL;
END
$fn$;
"""

TRIGGERS = """
CREATE TRIGGER experiment_rollup_insert AFTER INSERT ON interaction_events
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION experiment_rollup_insert();
CREATE TRIGGER experiment_rollup_delete AFTER DELETE ON interaction_events
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION experiment_rollup_change();
CREATE TRIGGER experiment_rollup_update AFTER UPDATE ON interaction_events
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION experiment_rollup_change();
CREATE TRIGGER experiment_rollup_truncate AFTER TRUNCATE ON interaction_events
    FOR EACH STATEMENT EXECUTE FUNCTION experiment_rollup_truncate();
"""

# Existing events: every request and every experiment, computed like a rebuild.
BACKFILL = """
SET LOCAL work_mem = '256MB';
CREATE TEMP TABLE experiment_rollup_keys ON COMMIT DROP AS
    SELECT DISTINCT tenant_id::text, request_id::text, user_id::text
    FROM interaction_events WHERE request_id IS NOT NULL AND type IN ('exposure', 'click', 'purchase');
CREATE TEMP TABLE experiment_rollup_experiments ON COMMIT DROP AS
    SELECT DISTINCT tenant_id::text, experiment::text
    FROM interaction_events WHERE type = 'exposure' AND experiment IS NOT NULL;
ANALYZE experiment_rollup_keys;
SELECT experiment_rollup_rebuild();
DROP TABLE experiment_rollup_keys, experiment_rollup_experiments;
"""


def upgrade() -> None:
    op.execute(TABLES)
    op.execute(INSERT_FUNCTION)
    op.execute(REBUILD_FUNCTION)
    op.execute(CHANGE_FUNCTION)
    # Backfill before the triggers exist; the migration's transaction holds the table lock
    # (events inserted meanwhile wait and are then maintained by the triggers).
    op.execute("LOCK TABLE interaction_events IN SHARE ROW EXCLUSIVE MODE")
    op.execute(BACKFILL)
    op.execute(TRIGGERS)


def downgrade() -> None:
    op.execute("DROP TRIGGER experiment_rollup_insert ON interaction_events")
    op.execute("DROP TRIGGER experiment_rollup_delete ON interaction_events")
    op.execute("DROP TRIGGER experiment_rollup_update ON interaction_events")
    op.execute("DROP TRIGGER experiment_rollup_truncate ON interaction_events")
    op.execute("DROP FUNCTION experiment_rollup_change(), experiment_rollup_truncate(), "
               "experiment_rollup_rebuild(), experiment_rollup_insert()")
    op.execute("DROP TABLE experiment_users, experiment_user_days, experiment_pending_outcomes, experiment_requests")
