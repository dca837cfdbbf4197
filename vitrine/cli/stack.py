"""Commands that run the system: up, worker, api, demo; plus tenant and db administration."""

from __future__ import annotations

import json
import logging
import signal
import threading
from pathlib import Path

import httpx
import typer

from core.secrets import mask_url, masked
from core.settings import Settings, StackNotRunning
from vitrine.cli.app import UNREACHABLE, app, db_app, fail, load_settings, setup_logging, tenant_app

log = logging.getLogger("vitrine")


def resolved_settings(settings: Settings | None = None) -> Settings:
    """Settings with broker and database addresses, or exit with one line saying what is missing."""
    settings = settings or load_settings()
    try:
        return settings.resolved()
    except StackNotRunning as exc:
        fail(str(exc), UNREACHABLE)


@app.command()
def up(verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
    """Start the embedded broker and Postgres (unless configured), migrate, create topics; Ctrl-C stops."""
    from vitrine.stack import EmbeddedStack, StackError

    setup_logging(verbose)
    settings = load_settings()
    stack = EmbeddedStack(settings)
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    try:
        resolved = stack.start()
    except StackError as exc:
        fail(str(exc))
    typer.echo(
        f"kafka     {resolved.kafka_bootstrap}"
        f"{f'  (embedded tansu, {stack.broker.description})' if stack.broker else ''}"
    )
    typer.echo(f"postgres  {mask_url(resolved.database_url)}{'  (embedded)' if stack.postgres else ''}")
    typer.echo(f"data dir  {settings.data_dir.resolve()}")
    if not (stack.broker or stack.postgres):
        typer.echo("both services are external: nothing to keep running.")
        return
    typer.echo("ready; Ctrl-C or SIGTERM stops both.")
    try:
        stopping.wait()
    finally:
        typer.echo("stopping...")
        stack.stop()
        typer.echo("stopped.")


@app.command()
def worker(verbose: bool = typer.Option(False, "--verbose", "-v")) -> None:
    """Run the faust stream processor (catalog ingestion) against the configured or embedded stack."""
    from streams.worker import Worker, create_worker
    from vitrine.stack import StackError, prepare

    setup_logging(verbose)
    settings = resolved_settings()
    try:
        prepare(settings)
    except StackError as exc:
        fail(str(exc))
    faust_app = create_worker(settings)
    Worker(
        faust_app,
        loglevel="DEBUG" if verbose else "INFO",
        quiet=True,
        redirect_stdouts=False,
        stop_timeout_s=settings.worker_stop_timeout_s,
    ).execute_from_commandline()


@app.command()
def api(
    verbose: bool = typer.Option(False, "--verbose", "-v"),
    port: int = typer.Option(None, help="Override VITRINE_API_PORT"),
) -> None:
    """Serve the HTTP API (catalog webhooks, recommendations) with uvicorn."""
    import uvicorn

    from recommender.app import create_app
    from vitrine.stack import StackError, check_database

    setup_logging(verbose)
    settings = resolved_settings()
    try:
        check_database(settings.database_url)
    except StackError as exc:
        fail(str(exc))
    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=port or settings.api_port,
        log_level="debug" if verbose else "info",
        access_log=verbose,
    )


@tenant_app.command("create")
def tenant_create(
    name: str,
    tenant_id: str = typer.Option(None, "--id", help="Slug; default from NAME"),
    default_arm: str = typer.Option("baseline", help="Arm for shoppers outside any experiment: baseline or visual"),
    as_json: bool = typer.Option(False, "--json", help="One JSON object with the tenant id, keys and secret"),
) -> None:
    """Create a tenant and print its storefront key, admin key and webhook secret (shown once)."""
    from db.session import create_db_engine, session_factory
    from db.tenants import create_tenant
    from vitrine.cli.tenant import cli_actor

    settings = resolved_settings()
    engine = create_db_engine(settings.database_url)
    try:
        with session_factory(engine).begin() as session:
            if default_arm not in ("baseline", "visual"):
                raise ValueError(f"unknown arm {default_arm!r}: use baseline or visual")
            creds = create_tenant(session, name, tenant_id, default_arm=default_arm, actor=cli_actor())
    except ValueError as exc:
        fail(str(exc))
    finally:
        engine.dispose()
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "tenant": creds.tenant_id,
                    "storefront_key": creds.storefront_key,
                    "admin_key": creds.admin_key,
                    "webhook_secret": creds.webhook_secret,
                }
            )
        )
        return
    typer.echo(f"tenant          {creds.tenant_id}")
    typer.echo(f"storefront key  {creds.storefront_key}")
    typer.echo(f"admin key       {creds.admin_key}")
    typer.echo(f"webhook secret  {creds.webhook_secret}")
    typer.echo("store these now: only digests of the keys are kept.")


@tenant_app.command("list")
def tenant_list(
    as_json: bool = typer.Option(False, "--json", help='One JSON object {"tenants": [{id, name, ...counts}]}'),
) -> None:
    """List tenants with their catalog counts (and allowed CORS origins)."""
    from sqlalchemy import select

    from db.catalog import catalog_counts
    from db.models import Tenant
    from db.session import create_db_engine, session_factory

    settings = resolved_settings()
    engine = create_db_engine(settings.database_url)
    with session_factory(engine)() as session:
        tenants = session.scalars(select(Tenant).order_by(Tenant.id)).all()
        counts = {t.id: catalog_counts(session, t.id) for t in tenants}
    engine.dispose()
    if as_json:
        rows = [
            {"id": t.id, "name": t.name, "default_arm": t.default_arm, "cors_origins": list(t.cors_origins)}
            | {k: v for k, v in counts[t.id].items() if isinstance(v, int)}
            for t in tenants
        ]
        typer.echo(json.dumps({"tenants": rows, "count": len(rows)}))
        return
    typer.echo(f"{'tenant':<24} {'products':>9} {'images ok':>10} {'failed':>7} {'items':>7}  cors origins")
    for t in tenants:
        c = counts[t.id]
        origins = ", ".join(t.cors_origins) or "-"
        typer.echo(
            f"{t.id:<24} {c['products']:>9} {c['images_ok']:>10} {c['images_failed']:>7} {c['items']:>7}  {origins}"
        )


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head")) -> None:
    """Apply database migrations (runs automatically in `vitrine up` and `vitrine worker`)."""
    from db.migrate import upgrade
    from vitrine.stack import StackError, check_database

    settings = resolved_settings()
    try:
        check_database(settings.database_url)
    except StackError as exc:
        fail(str(exc))
    upgrade(settings.database_url, revision)
    typer.echo(f"database at {revision}")


@app.command()
def demo(
    products: int = typer.Option(520, min=20, max=5000, help="Sample products to build and ingest"),
    users: int = typer.Option(1500, min=1, help="Simulated shoppers"),
    rate: float = typer.Option(120.0, min=1.0, help="Recommendation requests per second, all shoppers together"),
    seed: int = typer.Option(0, min=0, max=2**31 - 1, help="Seed of the catalog, the training split and the shoppers"),
    method: str = typer.Option("triplet", help="Training method: supervised | triplet | design | autoencoder"),
    same_category: bool = typer.Option(
        True, "--same-category/--any-category", help="Storefront widget: similar items in the product's category or any"
    ),
    exit_after_report: bool = typer.Option(
        False, "--exit", help="Stop after the report (scripts, tests) instead of serving until Ctrl-C"
    ),
    screenshots: Path = typer.Option(None, "--screenshots", help="Save the dashboard pages as PNGs in this folder"),
    dashboard_port: int = typer.Option(8501, help="Dashboard port (another free one if taken)"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """The main job on the embedded stack: sample catalog, trained model, experiment, simulated shoppers, dashboard."""
    from vitrine.demo import DemoOptions, run_demo

    setup_logging(verbose)
    options = DemoOptions(
        products=products,
        users=users,
        rate=rate,
        seed=seed,
        method=method,
        same_category=same_category,
        exit_after_report=exit_after_report,
        screenshots=screenshots,
        dashboard_port=dashboard_port,
    )
    if method not in ("supervised", "triplet", "design", "autoencoder"):
        fail(f"unknown --method {method!r}; choose supervised, triplet, design or autoencoder", 2)
    if screenshots:
        from vitrine.screenshots import BrowserMissing, browser_paths

        try:
            browser_paths()  # before minutes of work, not after
        except BrowserMissing as exc:
            fail(f"--screenshots: {exc}", 2)
    try:
        run_demo(load_settings(), options)
    except (RuntimeError, TimeoutError, httpx.HTTPError) as exc:
        fail(str(exc) or type(exc).__name__)


@app.command()
def config(
    markdown: bool = typer.Option(False, help="Print the settings table as Markdown (for the README)"),
    as_json: bool = typer.Option(False, "--json", help='One JSON object {"settings": [{variable, value, meaning}]}'),
) -> None:
    """Show every setting: its environment variable, effective value (secrets masked) and meaning."""
    settings = load_settings()
    rows = []
    for name, field in Settings.model_fields.items():
        rows.append((f"VITRINE_{name.upper()}", masked(getattr(settings, name)), field.description or ""))
    if as_json:
        keys = ("variable", "value", "meaning")
        typer.echo(json.dumps({"settings": [dict(zip(keys, row)) for row in rows]}))
        return
    if markdown:
        typer.echo("| variable | default | meaning |\n| --- | --- | --- |")
        for var, value, doc in rows:
            typer.echo(f"| `{var}` | `{value}` | {doc.replace('|', '/')} |")
        return
    width = max(len(r[0]) for r in rows)
    for var, value, doc in rows:
        typer.echo(f"{var:<{width}}  {value:<36}  {doc}")
