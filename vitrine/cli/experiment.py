"""CLI commands for experiment analysis: `experiment report`, `experiment refresh`, `experiment simulate`,
`bench stats`, `bench dashboard`."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import typer

from vitrine.cli.app import bench_app, experiment_app, fail, load_settings

BENCH_TENANT = "bench-stats"  # + "-N": one tenant per size, so sizes do not share outcome events


def _engine():
    """An Engine on the configured (or embedded, running) database, or exit with one line."""
    from core.settings import StackNotRunning
    from db.session import create_db_engine

    settings = load_settings()
    try:
        # Only Postgres is needed here: a configured URL is enough, no broker required.
        url = settings.database_url or settings.resolved().database_url
    except StackNotRunning as exc:
        fail(str(exc))
    return create_db_engine(url)


@experiment_app.command("report")
def report(
    key: str = typer.Argument(..., help="Experiment key"),
    tenant: str = typer.Option(..., "--tenant", "-t", help="Tenant id"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (the API's structure)"),
    attribution: str = typer.Option("request", help="request: same request_id as an exposure; "
                                    "window: within --window-hours after the first exposure"),
    window_hours: float = typer.Option(24.0, help="Attribution window for --attribution window"),
    alpha: float = typer.Option(0.05, min=1e-6, max=0.5),
    correction: str = typer.Option("holm", help="Adjusted p-values: holm (FWER) or fdr_bh (FDR)"),
    sequential: bool = typer.Option(False, "--sequential", help="Always-valid (peeking-safe) p-values and CIs"),
    tuning_n: float = typer.Option(0.0, help="Sequential tuning parameter (0 = planned sample size or 5000)"),
    cuped: bool = typer.Option(True, "--cuped/--no-cuped", help="CUPED when pre-period data exists"),
    pre_days: int = typer.Option(14, min=0, help="Pre-period length for CUPED covariates (0 = none)"),
    target_mde: float = typer.Option(0.05, help="Relative MDE the sample-size figure is computed for"),
) -> None:
    """Per metric and arm: n, value, CI, lift, p, adjusted p, significance, SRM, power."""
    from db.experiment_stats import analyze
    from experiments.analysis import Attribution, ReportOptions
    from experiments.report import render_text

    try:
        options = ReportOptions(attribution=Attribution(attribution, window_hours), alpha=alpha,
                                correction=correction, sequential=sequential, tuning_n=tuning_n, cuped=cuped,
                                pre_period_days=pre_days, target_relative_mde=target_mde)
    except ValueError as exc:
        fail(str(exc))
    engine = _engine()
    try:
        with engine.connect() as conn:
            result = analyze(conn, tenant, key, options)
    except ValueError as exc:  # an invalid stored definition or option: one line, not a traceback
        fail(f"experiment {key!r}: {exc}")
    finally:
        engine.dispose()
    if result is None:
        fail(f"experiment {key!r} of tenant {tenant!r} not found and has no exposures")
    typer.echo(json.dumps(result, allow_nan=False) if as_json else render_text(result), nl=as_json)


@experiment_app.command("refresh")
def refresh(
    tenant: str = typer.Option(None, "--tenant", "-t", help="Only this tenant's experiments"),
    key: str = typer.Option(None, "--key", "-k", help="Only this experiment (whatever its status)"),
    due: bool = typer.Option(False, "--due", help="Only the snapshots that are due (what the worker's timer does)"),
) -> None:
    """Recompute result snapshots (running and stopped experiments) now; print what was done and how long it took."""
    from db.experiment_snapshots import refresh_due

    settings = load_settings()
    engine = _engine()
    try:
        done = refresh_due(engine, older_than_s=settings.results_refresh_s or 0.0, tenant_id=tenant, key=key,
                           force=not due)
    finally:
        engine.dispose()
    if not done:
        typer.echo("nothing to refresh" + ("" if not (tenant or key) else " (no such experiment)"))
        return
    typer.echo(f"{'tenant':<24} {'experiment':<32} {'status':<10} {'seconds':>8}  source")
    for r in done:
        took = f"{r.duration_ms / 1000:.2f}" if r.duration_ms is not None else "-"
        typer.echo(f"{r.tenant_id:<24} {r.key:<32} {r.status:<10} {took:>8}  {r.source or r.error or ''}")
    if any(r.status == "error" for r in done):
        raise typer.Exit(1)


@experiment_app.command("simulate")
def simulate(
    runs: int = typer.Option(2000, min=1, help="Simulated experiments per scenario"),
    users: int = typer.Option(40000, min=4, help="Users per experiment (both arms) at the last day"),
    days: int = typer.Option(14, min=1, help="Days per experiment (one peek per day)"),
    effect: float = typer.Option(0.10, help="Relative lift of the treatment in A/B runs"),
    baseline: float = typer.Option(0.05, help="Control conversion rate"),
    alpha: float = typer.Option(0.05),
    seed: int = typer.Option(20261121),
    tuning_n: float = typer.Option(0.0, help="Sequential tuning parameter (0 = --users)"),
    ctr_users: int = typer.Option(4000, min=2, help="Users per arm in the per-user CTR runs"),
    as_json: bool = typer.Option(False, "--json", help="One JSON object with settings and machine"),
) -> None:
    """A/A and A/B simulations: FPR, empirical vs theoretical power, peeking naive vs sequential."""
    from experiments.simulate import SimulationSettings, render_text
    from experiments.simulate import simulate as run

    try:
        settings = SimulationSettings(runs=runs, users=users, days=days, effect=effect, baseline_rate=baseline,
                                      alpha=alpha, seed=seed, tuning_n=tuning_n, ctr_users=ctr_users)
    except ValueError as exc:
        fail(str(exc))
    result = run(settings)
    typer.echo(json.dumps(result.to_dict(), allow_nan=False) if as_json else render_text(result), nl=as_json)


# --- bench stats ---------------------------------------------------------------------------

# Synthetic events straight into Postgres: pairs of events per request (an exposure, then an
# exposure, click, add_to_cart or purchase), ~20 events per user, users split by parity,
# spread over 14 days. Pseudo-random but fixed by setseed.
_GENERATE = """
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


def _prepare_bench(engine, n: int, fresh: bool) -> tuple[str, str, float | None]:
    """Make sure tenant/experiment bench-stats-N holds exactly N events; (tenant, key, seconds generating)."""
    from sqlalchemy import text

    key = f"bench-stats-{n}"
    tenant = f"{BENCH_TENANT}-{n}"
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO tenants (id, name, storefront_key_hash, admin_key_hash, webhook_secret, default_arm) "
            "VALUES (:t, 'stats benchmark', :s, :a, 'unused', 'baseline') ON CONFLICT (id) DO NOTHING"),
            {"t": tenant, "s": f"{tenant}-storefront-unused", "a": f"{tenant}-admin-unused"})
        conn.execute(text(
            "INSERT INTO experiments (tenant_id, key, placement, status, arms, traffic_fraction, salt, hash_version, "
            "primary_metric, guardrails, started_at) VALUES (:t, :k, 'similar', 'stopped', "
            "'[{\"name\": \"baseline\", \"weight\": 0.5}, {\"name\": \"visual\", \"weight\": 0.5}]'::jsonb, 1.0, :k, "
            "1, 'ctr', '[]'::jsonb, :start) ON CONFLICT (tenant_id, key) DO NOTHING"),
            {"t": tenant, "k": key, "start": start})
        have = conn.execute(text("SELECT count(*) FROM interaction_events WHERE tenant_id = :t AND experiment = :k"),
                            {"t": tenant, "k": key}).scalar()
    if have == n and not fresh:
        return tenant, key, None
    t0 = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM interaction_events WHERE tenant_id = :t AND experiment = :k"),
                     {"t": tenant, "k": key})
        conn.execute(text("SELECT setseed(0.42)"))
        conn.execute(text(_GENERATE), {"tenant": tenant, "key": key, "start": start, "n": n,
                                       "requests": max(n // 2, 1), "users": max(n // 20, 2)})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        # Hint bits + statistics before timing, for the events and the rollup the triggers filled.
        for table in ("interaction_events", "experiment_requests", "experiment_pending_outcomes",
                      "experiment_user_days"):
            conn.execute(text(f"VACUUM (ANALYZE) {table}"))
    return tenant, key, time.perf_counter() - t0


@bench_app.command("stats")
def bench_stats(
    events: str = typer.Option("1000000,10000000", help="Comma-separated event counts"),
    as_json: bool = typer.Option(False, "--json", help="One JSON object with the figures and the machine"),
    daily: bool = typer.Option(True, "--daily/--no-daily", help="Also time the per-day series"),
    fresh: bool = typer.Option(False, "--fresh", help="Regenerate events even if already there"),
    cleanup: bool = typer.Option(False, "--cleanup", help="Delete the generated events afterwards"),
    source: str = typer.Option("auto", help="auto: the rollup when exact (else raw events); "
                               "raw: always aggregate raw events (the pre-rollup path, for comparison)"),
) -> None:
    """Time loader (SQL aggregation in Postgres) + analysis for N synthetic interaction events."""
    from sqlalchemy import text

    from db.experiment_stats import load_experiment
    from experiments.report import build_report
    from experiments.simulate import machine

    try:
        sizes = [int(x.replace("_", "")) for x in events.split(",") if x.strip()]
    except ValueError:
        fail(f"--events must be comma-separated integers, got {events!r}")
    if source not in ("auto", "raw"):
        fail(f"--source must be auto or raw, got {source!r}")
    engine = _engine()
    rows = []
    try:
        for n in sizes:
            tenant, key, gen_s = _prepare_bench(engine, n, fresh)
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
            rows.append({"events": n, "users": sum(a.users for a in stats.arms), "generate_s": gen_s,
                         "load_s": t1 - t0, "analysis_s": t2 - t1, "total_s": t2 - t0, "daily_s": daily_s,
                         "source": used})
            if cleanup:
                with engine.begin() as conn:
                    conn.execute(text("DELETE FROM interaction_events WHERE tenant_id = :t AND experiment = :k"),
                                 {"t": tenant, "k": key})
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps({"benchmark": "stats", "goal": "10M events analysed in < 10 s",
                               "machine": machine(), "results": rows}))
        return
    typer.echo(f"{'events':>12} {'users':>10} {'generate s':>11} {'load s':>8} {'analysis s':>11} "
               f"{'total s':>8} {'daily s':>8}  source")
    for r in rows:
        gen = f"{r['generate_s']:.1f}" if r["generate_s"] is not None else "reused"
        dly = f"{r['daily_s']:.2f}" if r["daily_s"] is not None else "-"
        typer.echo(f"{r['events']:>12,} {r['users']:>10,} {gen:>11} {r['load_s']:>8.2f} {r['analysis_s']:>11.3f} "
                   f"{r['total_s']:>8.2f} {dly:>8}  {r['source']}")


# --- bench dashboard -----------------------------------------------------------------------


@bench_app.command("dashboard")
def bench_dashboard(
    events: str = typer.Option("1000000,10000000", help="Comma-separated event counts: the `bench stats` "
                               "experiments (generated first when missing)"),
    tenant: str = typer.Option(None, "--tenant", "-t", help="Time this tenant's experiment instead (with --key)"),
    key: str = typer.Option(None, "--key", "-k", help="Experiment to time (with --tenant)"),
    as_json: bool = typer.Option(False, "--json", help="One JSON object with the figures and the machine"),
) -> None:
    """Time the experiment detail page (Streamlit AppTest, in process): cold live, cold from snapshot, warm; refresh.

    Deletes the experiment's result snapshot first (the cold live run stores a new one).
    """
    import os

    from vitrine.bench.dashboard import time_experiment_page, warm_imports
    from experiments.simulate import machine
    from core.settings import StackNotRunning

    if (tenant is None) != (key is None):
        fail("--tenant and --key go together")
    settings = load_settings()
    try:
        url = settings.database_url or settings.resolved().database_url
    except StackNotRunning as exc:
        fail(str(exc))
    if not settings.kafka_bootstrap and not settings.stack_file.exists():
        # The page reads Postgres only, but the dashboard's settings want a broker address too.
        os.environ.setdefault("VITRINE_KAFKA_BOOTSTRAP", "unused:9092")
    if tenant is not None:
        targets = [(tenant, key)]
    else:
        try:
            sizes = [int(x.replace("_", "")) for x in events.split(",") if x.strip()]
        except ValueError:
            fail(f"--events must be comma-separated integers, got {events!r}")
        engine = _engine()
        try:
            targets = [_prepare_bench(engine, n, fresh=False)[:2] for n in sizes]
        finally:
            engine.dispose()
    warm_imports()
    load_before = os.getloadavg()
    try:
        rows = [time_experiment_page(url, t, k) for t, k in targets]
    except RuntimeError as exc:
        fail(str(exc))
    load_after = os.getloadavg()
    settings_used = {"results_max_age_s": settings.results_max_age_s, "cache_ttl_s": _report_ttl_s(),
                     "page": "dashboards/pages/experiment.py", "runner": "streamlit.testing.v1.AppTest"}
    if as_json:
        typer.echo(json.dumps({"benchmark": "dashboard", "goal": "a page with 10M events loads in a few seconds",
                               "machine": machine(), "load_average_before": list(load_before),
                               "load_average_after": list(load_after), "settings": settings_used,
                               "results": rows}))
        return
    m = machine()
    typer.echo(f"machine: {m['processor']}, {m['cpus']} cpus, {m['platform']}, Python {m['python']}; load average "
               f"(1/5/15 min) before {', '.join(f'{x:.2f}' for x in load_before)}, "
               f"after {', '.join(f'{x:.2f}' for x in load_after)}")
    typer.echo(f"settings: snapshot max age {settings.results_max_age_s:g} s, cache TTL {_report_ttl_s()} s; "
               "cold = st.cache_data cleared, connection pool kept\n")
    typer.echo(f"{'events':>12} {'users':>10} {'cold live s':>12} {'cold snapshot s':>16} {'warm s':>8} "
               f"{'refresh s':>10}  source")
    for r in rows:
        typer.echo(f"{r['events']:>12,} {r['users']:>10,} {r['cold_live_s']:>12.2f} {r['cold_snapshot_s']:>16.2f} "
                   f"{r['warm_s']:>8.2f} {r['refresh_s']:>10.2f}  {r['source']}")


def _report_ttl_s() -> int:
    from dashboards.data import REPORT_TTL_S

    return REPORT_TTL_S
