"""`vitrine status`: per-tenant catalog counts (`db.status`) beside worker lag and dead letters (`streams.status`).

Postgres' reachability is probed here directly; since when it has been away comes from the local worker,
which waits out an outage and says so on its /metrics/ page (`streams.status.worker_health`).

Exit codes, for scripts: 0 all good; 1 unknown tenant; 2 a service (Kafka, Postgres) is unreachable.
"""

from __future__ import annotations

import json

import typer

from core.settings import Settings
from vitrine.cli.app import app, fail
from vitrine.cli.catalog import UNREACHABLE, clip, postgres_unreachable, setup_command_logging
from vitrine.cli.stack import resolved_settings


@app.command()
def status(
    tenant: str = typer.Option(None, "--tenant", "-t", help="Only this tenant"),
    as_json: bool = typer.Option(False, "--json", help="One JSON object instead of the table"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Per tenant: products, deleted, images ok/pending/failed (top reasons), items; worker lag; dead letters.

    Exits 2 (after printing what it could) if Kafka or Postgres is unreachable.
    """
    from streams.status import kafka_status, worker_health

    setup_command_logging(verbose)
    settings = resolved_settings()
    tenants, db_error = _catalog_status(settings, tenant)
    kafka = kafka_status(settings)
    worker = worker_health(settings)
    database = {"reachable": db_error is None, "error": db_error, "down_since": worker["database_down_since"]}
    for t in tenants:
        t["dead_letters"] = kafka["dead_letters_by_tenant"].get(t["tenant_id"], 0) if kafka["reachable"] else None
    if as_json:
        typer.echo(json.dumps({"tenants": tenants, "kafka": kafka, "database": database, "worker": worker}))
    else:
        _print_status(tenants, kafka, database, worker)
    if not kafka["reachable"] or db_error is not None:
        raise typer.Exit(UNREACHABLE)


def _catalog_status(settings: Settings, only: str | None) -> tuple[list[dict], str | None]:
    """(`db.status.catalog_status` on its own connection, None), or ([], why Postgres is unreachable).

    Exits 1 on an unknown tenant.
    """
    from sqlalchemy.exc import OperationalError

    from db.session import create_db_engine, session_factory
    from db.status import UnknownTenant, catalog_status

    engine = create_db_engine(settings.database_url)
    try:
        with session_factory(engine)() as session:
            return catalog_status(session, only), None
    except UnknownTenant as exc:
        fail(str(exc))
    except OperationalError as exc:
        return [], postgres_unreachable(exc)
    finally:
        engine.dispose()


def deployment_line(d: dict, *, active: str | None = None) -> str:
    """One model deployment as a status line: state, re-embed progress, and whether it is the active model."""
    mark = " (active)" if d["model_key"] == active else ""
    source = " from the images" if d.get("from_images") else ""
    if d["status"] == "embedding":
        state = (
            f"re-embedding{source}, {d['phase']} {d['progress']:.0%} ({d['items_done']:,}/{d['items_total']:,} read)"
        )
    elif d["status"] == "failed":
        state = f"failed: {clip(d['reason'] or '', 80)}"
    elif d["status"] == "retiring":
        state = "retiring: its vectors and index are being deleted"
    else:
        state = f"ready, {d['index_kind']} index"
        if d.get("repairing"):
            state += ", writing the vectors ingest could not (repair)"
    if d["status"] != "failed" and d.get("items_failed"):
        state += f", {d['items_failed']:,} item(s) without a vector (image unavailable or changed)"
    return f"model {d['model_key']}{mark}: {state}"


def _print_status(tenants: list[dict], kafka: dict, database: dict, worker: dict) -> None:
    if not database["reachable"]:
        since = f" since {database['down_since']}" if database["down_since"] else ""
        typer.secho(f"database unreachable{since}: {database['error']}", err=True, fg=typer.colors.RED)
    head = ("tenant", "products", "deleted", "images ok", "pending", "failed", "items", "dead")
    typer.echo(f"{head[0]:<24}" + "".join(f"{h:>10}" for h in head[1:]))
    for t in tenants:
        cells = (
            t["products"],
            t["deleted"],
            t["images_ok"],
            t["images_pending"],
            t["images_failed"],
            t["items"],
            "?" if t["dead_letters"] is None else t["dead_letters"],
        )
        typer.echo(f"{clip(t['tenant_id'], 24):<24}" + "".join(f"{c:>10}" for c in cells))
        for r in t["failure_reasons"]:
            typer.echo(f"  failed: {r['count']} x {clip(' '.join(r['reason'].split()), 90)}")
        for d in t.get("deployments", []):
            typer.echo("  " + deployment_line(d, active=t.get("active_model")))
    if not tenants and database["reachable"]:
        typer.echo("(no tenants; create one with `vitrine tenant create`)")
    typer.echo("")
    if worker["database_down_since"]:
        typer.echo(
            f"worker         waiting for the database since {worker['database_down_since']}; "
            "nothing is dead-lettered meanwhile"
        )
    elif worker["reachable"]:
        typer.echo("worker         running, database reachable" if worker["database_up"] else "worker         starting")
    if not kafka["reachable"]:
        typer.secho(f"kafka: {kafka['error']}", err=True, fg=typer.colors.RED)
        return
    lag = kafka["lag"] if kafka["lag_error"] is None else f"unavailable ({clip(kafka['lag_error'], 80)})"
    typer.echo(f"worker lag     {lag}  (group {kafka['group']} on {kafka['topic']})")
    typer.echo(
        f"dead letters   {kafka['dead_letters']}"
        + ("  (`vitrine catalog dead-letters`)" if kafka["dead_letters"] else "")
    )
