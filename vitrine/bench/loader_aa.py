"""A/A acceptance through the loader: simulated interactions written to Postgres, read back by the report's loader.

`experiments.simulate` checks the tests on sufficient statistics made in memory; this checks the whole path an
analyst's verdict takes: events in `interaction_events` (the rollup triggers fire as for real traffic), the
loader's SQL (request attribution, the p99 revenue cap, the pre-period CUPED sums) and `report_for`, the
function `db.experiment_stats.analyze` ends with. Every run is one A/A experiment with 1:9 arms in a scratch
database of its own, emptied (TRUNCATE, which empties the rollup too) after each run, so each load reads only
its own events. Counted per run, from the report:
- CTR, the primary metric, under the decision rule: `significant` of its row (primary at alpha, CUPED on the
  ratio when there is a pre-period), fixed-horizon and sequential (at the last look);
- revenue per user: the Welch p-value of its row < alpha, capped at p99 (the report's default) and uncapped.
"""

from __future__ import annotations

import gc
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from sqlalchemy import make_url, text
from sqlalchemy.engine import Engine

from core.machine import machine_info
from db.experiment_stats import load_experiment_stats
from experiments.analysis import ReportOptions, report_for
from experiments.simulate import Rate, SimulationSettings, rate_with_ci

log = logging.getLogger(__name__)

TENANT = "aa-loader"
START = datetime(2026, 3, 1, tzinfo=UTC)
DAYS = 7

# Per-user draws -> events, expanded in SQL: x exposures and y clicks on the user's one request, a purchase
# when rev > 0, and (before the start, no experiment, no request) xp exposures and yp clicks.
_INSERT = """
INSERT INTO interaction_events (tenant_id, event_id, type, user_id, request_id, product_id, experiment, arm,
                                value, payload, occurred_at)
SELECT :tenant, ev.event_id, ev.type, :key || '-u' || ev.i, ev.request_id, 'p1', ev.experiment, ev.arm, ev.value,
       '{}'::jsonb, ev.at
FROM (
    SELECT u.i, 'x' || u.i || '-' || k AS event_id, 'exposure' AS type, :key || '-r' || u.i AS request_id,
           :key AS experiment, u.arm, NULL::float8 AS value,
           CAST(:start AS timestamptz) + u.t * interval '1 day' + k * interval '1 minute' AS at
    FROM u, generate_series(1, u.x) AS k
    UNION ALL
    SELECT u.i, 'y' || u.i || '-' || k, 'click', :key || '-r' || u.i, :key, u.arm, NULL,
           CAST(:start AS timestamptz) + u.t * interval '1 day' + k * interval '1 minute' + interval '10 seconds'
    FROM u, generate_series(1, u.y) AS k
    UNION ALL
    SELECT u.i, 'b' || u.i, 'purchase', :key || '-r' || u.i, :key, u.arm, u.rev,
           CAST(:start AS timestamptz) + u.t * interval '1 day' + interval '2 hours'
    FROM u WHERE u.rev > 0
    UNION ALL
    SELECT u.i, 'px' || u.i || '-' || k, 'exposure', NULL, NULL, NULL, NULL,
           CAST(:start AS timestamptz) - (1 + u.t) * interval '1 day' + k * interval '1 minute'
    FROM u, generate_series(1, u.xp) AS k
    UNION ALL
    SELECT u.i, 'py' || u.i || '-' || k, 'click', NULL, NULL, NULL, NULL,
           CAST(:start AS timestamptz) - (1 + u.t) * interval '1 day' + k * interval '1 minute' + interval '10 seconds'
    FROM u, generate_series(1, u.yp) AS k
) ev
"""
_ANALYZED = ("interaction_events", "experiment_requests", "experiment_user_days", "experiment_users")
_USERS = """
WITH u AS (
    SELECT * FROM unnest(CAST(:i AS int[]), CAST(:arm AS text[]), CAST(:x AS int[]), CAST(:y AS int[]),
                         CAST(:rev AS float8[]), CAST(:xp AS int[]), CAST(:yp AS int[]), CAST(:t AS float8[]))
        AS u(i, arm, x, y, rev, xp, yp, t)
)"""


@dataclass(frozen=True)
class LoaderAASettings:
    """What each run writes: `users` per experiment (both arms, `control_share` in control), 1 + Poisson exposures."""

    runs: int = 200
    users: int = 30_000
    control_share: float = 0.1  # 1:9 arms
    seed: int = 20261204
    alpha: float = 0.05
    exposures_mean: float = 1.5  # per user: 1 + Poisson(mean - 1), in the experiment and (if active) before it
    pre_active: float = 0.5  # share of users with pre-period exposures
    cap_percentile: float = 0.99

    def __post_init__(self) -> None:
        if self.runs < 1 or self.users < 20 or not 0 < self.control_share < 1:
            raise ValueError("runs >= 1, users >= 20 and control_share in (0, 1) are required")
        if not (0 < self.alpha < 1 and self.exposures_mean >= 1 and 0 <= self.pre_active <= 1):
            raise ValueError("alpha in (0, 1), exposures_mean >= 1 and pre_active in [0, 1] are required")

    def simulation(self) -> SimulationSettings:
        """The in-memory simulation's settings these runs share (CTR ~ Beta per user, 5 % buyers, lognormal orders)."""
        return SimulationSettings(exposures_mean=self.exposures_mean, ctr_pre_active=self.pre_active)


@dataclass(frozen=True)
class LoaderAAResult:
    """False-positive rates through the loader, with timings; JSON-ready through `to_dict`."""

    settings: LoaderAASettings
    users_control: int
    users_treatment: int
    events_per_run: float
    ctr_fpr: Rate  # the primary metric's `significant`, fixed horizon
    ctr_fpr_sequential: Rate  # the same, always-valid, at the last look
    ctr_cuped_runs: int  # runs where CTR was CUPED-adjusted
    revenue_fpr_capped: Rate  # the revenue row's p < alpha, capped at the percentile (the report's default)
    revenue_fpr_uncapped: Rate
    revenue_larger_arm_wins_uncapped: float
    revenue_small_sample_warnings: int
    median_cap: float
    seconds_writing: float
    seconds_loading: float  # load_experiment_stats + report_for (what analyze does), summed over runs

    def to_dict(self) -> dict:
        """A JSON-serialisable dict, including the machine it ran on."""
        d = asdict(self)
        d["machine"] = machine_info()
        return d


def user_draws(rng: np.random.Generator, s: LoaderAASettings) -> dict[str, list]:
    """One run's per-user draws (first `control_share` of users in control): the arrays `write_run` expands."""
    sim = s.simulation()
    n = s.users
    n_c = max(2, round(n * s.control_share))
    a, b = sim.ctr_mean * sim.ctr_beta_concentration, (1 - sim.ctr_mean) * sim.ctr_beta_concentration
    p = rng.beta(a, b, size=n)
    x = 1 + rng.poisson(s.exposures_mean - 1, size=n)
    y = rng.binomial(x, p)
    mu, sigma = sim.order_lognormal
    rev = np.where(rng.random(n) < sim.buyer_rate, np.round(rng.lognormal(mu, sigma, n), 2), 0.0)
    xp = np.where(rng.random(n) < s.pre_active, 1 + rng.poisson(s.exposures_mean - 1, size=n), 0)
    yp = rng.binomial(xp, p)
    return {
        "i": list(range(n)),
        "arm": ["baseline"] * n_c + ["visual"] * (n - n_c),
        "x": x.tolist(),
        "y": y.tolist(),
        "rev": rev.tolist(),
        "xp": xp.tolist(),
        "yp": yp.tolist(),
        "t": rng.uniform(0, DAYS - 1, size=n).tolist(),
    }


def write_run(engine: Engine, key: str, s: LoaderAASettings, users: dict[str, list]) -> int:
    """Write one A/A experiment (its row and its events, expanded from `users` in SQL); the number of events."""
    arms = [{"name": "baseline", "weight": s.control_share}, {"name": "visual", "weight": 1 - s.control_share}]
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO experiments (tenant_id, key, placement, status, arms, traffic_fraction, salt, "
                "hash_version, primary_metric, guardrails, planned_sample_size, started_at, stopped_at) "
                "VALUES (:t, :k, 'similar', 'stopped', CAST(:arms AS jsonb), 1.0, :k, 1, 'ctr', '[]'::jsonb, :n, "
                ":start, :stop)"
            ),
            {"t": TENANT, "k": key, "arms": json.dumps(arms), "n": s.users, "start": START,
             "stop": START + timedelta(days=DAYS)},
        )  # fmt: skip
        result = conn.execute(text(_USERS + _INSERT), {"tenant": TENANT, "key": key, "start": START, **users})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        # Fresh tables have no statistics: without them the planner nests loops over the pre-period join
        # (minutes instead of a fraction of a second). Real tables are analysed by autovacuum.
        for table in _ANALYZED:
            conn.execute(text(f"ANALYZE {table}"))
    return result.rowcount


def run_loader_aa(
    engine: Engine, settings: LoaderAASettings, progress: Callable[[int, int], None] | None = None
) -> LoaderAAResult:
    """Write, load and analyse `settings.runs` A/A experiments in the (scratch, emptied run by run) database."""
    # statsmodels' Holm (`multipletests`, twice per report) calls gc.collect(): a full collection of this
    # process costs ~0.1-0.5 s, more than the whole analysis. Freezing what exists leaves it only the new objects.
    gc.freeze()
    try:
        return _run(engine, settings, progress)
    finally:
        gc.unfreeze()


def _run(engine: Engine, settings: LoaderAASettings, progress: Callable[[int, int], None] | None) -> LoaderAAResult:
    s = settings
    rng = np.random.default_rng(s.seed)
    n_c = max(2, round(s.users * s.control_share))
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO tenants (id, name, storefront_key_hash, admin_key_hash, webhook_secret, default_arm) "
                "VALUES (:t, 'A/A through the loader', :s, :a, 'unused', 'baseline') ON CONFLICT (id) DO NOTHING"
            ),
            {"t": TENANT, "s": f"{TENANT}-storefront-unused", "a": f"{TENANT}-admin-unused"},
        )
    fixed, sequential = ReportOptions(), ReportOptions(sequential=True)
    ctr_hits = ctr_seq_hits = cuped_runs = capped_hits = plain_hits = larger = warned = 0
    caps, events = [], 0
    writing = loading = 0.0
    for run in range(s.runs):
        key = f"aa-{run}-{uuid.uuid4().hex[:6]}"
        users = user_draws(rng, s)
        t0 = time.perf_counter()
        events += write_run(engine, key, s, users)
        t1 = time.perf_counter()
        with engine.connect() as conn:
            definition, stats = load_experiment_stats(conn, TENANT, key)
            conn.rollback()
        kw = {"planned_sample_size": s.users, "as_of": START + timedelta(days=DAYS), "tenant_id": TENANT}
        report = report_for(definition, stats, fixed, **kw)
        t2 = time.perf_counter()
        seq = report_for(definition, stats, sequential, **kw)
        uncapped = report_for(definition, stats, ReportOptions(cap_percentile=None), **kw)
        writing += t1 - t0
        loading += t2 - t1
        ctr = _row(report, "ctr")
        ctr_hits += bool(ctr["significant"])
        ctr_seq_hits += bool(_row(seq, "ctr")["significant"])
        cuped_runs += ctr["method"].startswith("CUPED")
        capped_hits += _row(report, "revenue_per_user")["p_value"] < s.alpha
        plain = _row(uncapped, "revenue_per_user")
        if plain["p_value"] < s.alpha:
            plain_hits += 1
            larger += plain["effect"] > 0  # the treatment arm is the larger one
        warned += any("buyers" in w for w in report["warnings"])
        caps.append((report["revenue_capping"] or {}).get("cap") or 0.0)
        with engine.begin() as conn:
            conn.execute(text("TRUNCATE interaction_events"))  # the rollup's truncate trigger empties it too
        if progress:
            progress(run + 1, s.runs)
    return LoaderAAResult(
        settings=s,
        users_control=n_c,
        users_treatment=s.users - n_c,
        events_per_run=events / s.runs,
        ctr_fpr=rate_with_ci(ctr_hits, s.runs),
        ctr_fpr_sequential=rate_with_ci(ctr_seq_hits, s.runs),
        ctr_cuped_runs=cuped_runs,
        revenue_fpr_capped=rate_with_ci(capped_hits, s.runs),
        revenue_fpr_uncapped=rate_with_ci(plain_hits, s.runs),
        revenue_larger_arm_wins_uncapped=larger / plain_hits if plain_hits else 0.0,
        revenue_small_sample_warnings=warned,
        median_cap=float(np.median(caps)),
        seconds_writing=writing,
        seconds_loading=loading,
    )


def _row(report: dict, metric: str) -> dict:
    """The treatment row of `metric` in a report."""
    block = next(m for m in report["metrics"] if m["name"] == metric)
    return next(r for r in block["rows"] if not r["is_control"])


def scratch_database(url: str) -> tuple[str, Callable[[], None]]:
    """Create and migrate an empty database beside `url`'s (same server); (its URL, a function that drops it)."""
    from db.migrate import upgrade
    from db.session import create_db_engine

    base = make_url(url)
    name = f"vitrine_aa_{uuid.uuid4().hex[:10]}"
    admin = create_db_engine(base.set(database="postgres").render_as_string(hide_password=False),
                             isolation_level="AUTOCOMMIT")  # fmt: skip
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    scratch = base.set(database=name).render_as_string(hide_password=False)
    upgrade(scratch)

    def drop() -> None:
        engine = create_db_engine(base.set(database="postgres").render_as_string(hide_password=False),
                                  isolation_level="AUTOCOMMIT")  # fmt: skip
        try:
            with engine.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            engine.dispose()

    return scratch, drop


def render_text(r: LoaderAAResult) -> str:
    """The figures as aligned text lines."""
    s = r.settings

    def fmt(x: Rate) -> str:
        return f"{x.rate:.4f}  [95% CI {x.ci[0]:.4f}, {x.ci[1]:.4f}]  ({x.hits}/{x.runs})"

    arms = f"{r.users_control:,} vs {r.users_treatment:,}"
    rows = [
        (f"CTR (primary) A/A FPR, {arms}: report's verdict, fixed", fmt(r.ctr_fpr)),
        ("CTR (primary) A/A FPR: report's verdict, sequential", fmt(r.ctr_fpr_sequential)),
        (f"Revenue A/A FPR, {arms}: capped at p{s.cap_percentile * 100:g}", fmt(r.revenue_fpr_capped)),
        (f"Revenue A/A FPR, {arms}: uncapped", fmt(r.revenue_fpr_uncapped)),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [
        f"settings: runs={s.runs} users={s.users} (control share {s.control_share:g}) seed={s.seed} "
        f"alpha={s.alpha} exposures 1+Poisson({s.exposures_mean - 1:g}) pre-period share {s.pre_active:g}",
        *(f"{name.ljust(width)}  {value}" for name, value in rows),
        f"CTR CUPED-adjusted in {r.ctr_cuped_runs}/{s.runs} runs; uncapped false positives in favour of the larger "
        f"arm: {r.revenue_larger_arm_wins_uncapped:.0%}; small-sample warnings: {r.revenue_small_sample_warnings}; "
        f"median cap {r.median_cap:,.2f}",
        f"events per run: {r.events_per_run:,.0f}; seconds writing {r.seconds_writing:.1f}, "
        f"loading + report {r.seconds_loading:.1f}",
    ]
    return "\n".join(lines) + "\n"
