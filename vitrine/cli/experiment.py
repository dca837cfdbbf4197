"""CLI commands for experiment analysis: `experiment report`, `experiment refresh`, `experiment simulate`.

Their benchmarks (`bench stats`, `bench dashboard`) are in bench.py."""

from __future__ import annotations

import json

import typer

from vitrine.cli.app import database_engine, experiment_app, fail, load_settings


@experiment_app.command("report")
def report(
    key: str = typer.Argument(..., help="Experiment key"),
    tenant: str = typer.Option(..., "--tenant", "-t", help="Tenant id"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (the API's structure)"),
    attribution: str = typer.Option(
        "request",
        help="request: same request_id as an exposure; window: within --window-hours after the first exposure",
    ),
    window_hours: float = typer.Option(24.0, help="Attribution window for --attribution window"),
    alpha: float = typer.Option(0.05, min=1e-6, max=0.5),
    correction: str = typer.Option("holm", help="Adjusted p-values: holm (FWER) or fdr_bh (FDR)"),
    sequential: bool = typer.Option(False, "--sequential", help="Always-valid (peeking-safe) p-values and CIs"),
    tuning_n: float = typer.Option(0.0, help="Sequential tuning parameter (0 = planned sample size or 5000)"),
    cuped: bool = typer.Option(True, "--cuped/--no-cuped", help="CUPED when pre-period data exists"),
    pre_days: int = typer.Option(14, min=0, help="Pre-period length for CUPED covariates (0 = none)"),
    target_mde: float = typer.Option(0.05, help="Relative MDE the sample-size figure is computed for"),
    cap_percentile: float = typer.Option(
        0.99, help="Cap each user's revenue at this percentile of all users' revenue (0 = no cap)"
    ),
) -> None:
    """Per metric and arm: n, value, CI, lift, p, adjusted p, significance, SRM, power."""
    from db.experiment_stats import analyze
    from experiments.analysis import Attribution, ReportOptions
    from experiments.capping import Capping
    from experiments.report import render_text

    try:
        options = ReportOptions(
            attribution=Attribution(attribution, window_hours),
            alpha=alpha,
            correction=correction,
            sequential=sequential,
            tuning_n=tuning_n,
            cuped=cuped,
            pre_period_days=pre_days,
            target_relative_mde=target_mde,
            cap_percentile=cap_percentile or None,
        )
        if cap_percentile:
            Capping(cap_percentile)  # a bad percentile is one clear line before any query
    except ValueError as exc:
        fail(str(exc))
    engine = database_engine()
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
    as_json: bool = typer.Option(False, "--json", help='One JSON object {"refreshed": [...]}'),
) -> None:
    """Recompute result snapshots (running and stopped experiments) now; print what was done and how long it took."""
    from db.experiment_snapshots import refresh_due

    settings = load_settings()
    engine = database_engine()
    try:
        done = refresh_due(
            engine, older_than_s=settings.results_refresh_s or 0.0, tenant_id=tenant, key=key, force=not due
        )
    finally:
        engine.dispose()
    if as_json:
        rows = [
            {"tenant": r.tenant_id, "experiment": r.key, "status": r.status, "source": r.source, "error": r.error,
             "seconds": None if r.duration_ms is None else round(r.duration_ms / 1000, 3)}
            for r in done
        ]  # fmt: skip
        typer.echo(json.dumps({"refreshed": rows}))
        if any(r.status == "error" for r in done):
            raise typer.Exit(1)
        return
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
    revenue_runs: int = typer.Option(1000, min=1, help="A/A revenue runs per size (1:9 arms, heavy-tailed orders)"),
    revenue_users: list[int] = typer.Option(
        [50_000, 10_000], help="Users per revenue experiment (both arms); repeat for several sizes"
    ),
    cap_percentile: float = typer.Option(0.99, help="Revenue capping: percentile of all per-user values"),
    as_json: bool = typer.Option(False, "--json", help="One JSON object with settings and machine"),
    loader: bool = typer.Option(
        False,
        "--loader",
        help="A/A runs through Postgres instead: events written to a scratch database beside the configured one, "
        "read back by the report's loader (needs the database; --seed and --alpha apply)",
    ),
    loader_runs: int = typer.Option(200, min=1, help="--loader: A/A experiments written and analysed"),
    loader_users: int = typer.Option(30_000, min=20, help="--loader: users per experiment (both arms, 1:9)"),
) -> None:
    """A/A and A/B simulations: FPR, power, peeking naive vs sequential, revenue with and without capping, CUPED."""
    from experiments.simulate import SimulationSettings, render_text
    from experiments.simulate import simulate as run

    if loader:
        _simulate_through_loader(loader_runs, loader_users, seed, alpha, as_json)
        return

    try:
        settings = SimulationSettings(
            runs=runs,
            users=users,
            days=days,
            effect=effect,
            baseline_rate=baseline,
            alpha=alpha,
            seed=seed,
            tuning_n=tuning_n,
            ctr_users=ctr_users,
            revenue_runs=revenue_runs,
            revenue_users=tuple(revenue_users),
            cap_percentile=cap_percentile,
        )
    except ValueError as exc:
        fail(str(exc))
    result = run(settings)
    typer.echo(json.dumps(result.to_dict(), allow_nan=False) if as_json else render_text(result), nl=as_json)


def _simulate_through_loader(runs: int, users: int, seed: int, alpha: float, as_json: bool) -> None:
    """`simulate --loader`: A/A experiments written to a scratch database and analysed by the report's code path."""
    from db.session import create_db_engine
    from vitrine.bench.loader_aa import LoaderAASettings, render_text, run_loader_aa, scratch_database

    try:
        settings = LoaderAASettings(runs=runs, users=users, seed=seed, alpha=alpha)
    except ValueError as exc:
        fail(str(exc))
    base = database_engine()  # exits with one line when no database is configured or running
    url = base.url.render_as_string(hide_password=False)
    base.dispose()
    scratch, drop = scratch_database(url)
    engine = create_db_engine(scratch)

    def progress(done: int, total: int) -> None:
        if not as_json and (done % 10 == 0 or done == total):
            typer.echo(f"  {done}/{total} runs", err=True)

    try:
        result = run_loader_aa(engine, settings, progress)
    finally:
        engine.dispose()
        drop()
    typer.echo(json.dumps(result.to_dict(), allow_nan=False) if as_json else render_text(result), nl=as_json)
