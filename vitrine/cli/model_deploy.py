"""`vitrine model deploy|reembed|activate|rollback|deployments`: put a tenant's trained model into service.

`deploy` asks for the background re-embed that the workers run (db/deployments.py, streams/reembed.py);
`reembed` does the same and runs it here in the foreground until the model is ready. A model serves on
`visual@<key>` experiment arms once ready; `activate` makes it the plain `visual` arm's model and
`rollback` points that arm back at the previous one.
"""

from __future__ import annotations

import json
import time

import typer

from vitrine.cli.app import database_engine, fail, load_settings, model_app
from vitrine.cli.status import deployment_line
from vitrine.cli.vision import JSON, VERBOSE, quiet_logging

TENANT = typer.Option(..., "--tenant", "-t", help="Whose catalog")
INDEX = typer.Option("halfvec", "--index", help="Index kind: halfvec, binary or codes (a head trained with bits)")


def _embedder_key() -> str:
    from vision.components import build_embedder

    return build_embedder(load_settings()).model_key  # its key only: no weights are loaded


def _in_transaction(action):
    from db.session import session_factory

    engine = database_engine()
    try:
        with session_factory(engine).begin() as s:
            return action(s)
    finally:
        engine.dispose()


def _deployment_json(dep) -> dict:
    from db.deployments import progress

    return {
        "tenant": dep.tenant_id,
        "model_key": dep.model_key,
        "status": dep.status,
        "phase": dep.phase,
        "progress": progress(dep),
        "items_done": dep.items_done,
        "items_total": dep.items_total,
        "items_written": dep.items_written,
        "items_failed": dep.items_failed,
        "from_images": dep.needs_images,
        "index_kind": dep.index_kind,
        "reason": dep.reason,
        "created_at": dep.created_at.isoformat(),
        "ready_at": dep.ready_at.isoformat() if dep.ready_at else None,
    }


def _deploy(tenant: str, ref: str, index: str):
    from db.deployments import DeploymentError, deploy_trained

    embedder_key = _embedder_key()
    try:
        dep, started = _in_transaction(
            lambda s: deploy_trained(s, tenant, ref, embedder_key=embedder_key, index_kind=index)
        )
    except DeploymentError as exc:
        fail(str(exc))
    if dep is None:
        fail(f"{ref} is the deployed pretrained model: it serves already (arm `visual@{ref}`)")
    return dep, started


@model_app.command("deploy")
def deploy(
    model: str = typer.Argument(..., help="A ready model of the tenant (key or job id)"),
    tenant: str = TENANT,
    index: str = INDEX,
    as_json: bool = JSON,
) -> None:
    """Re-embed the tenant's catalog with a model in the background (the workers run it; see `vitrine status`)."""
    dep, started = _deploy(tenant, model, index)
    if as_json:
        typer.echo(json.dumps(_deployment_json(dep) | {"started": started}))
    else:
        typer.echo(("started: " if started else "unchanged: ") + deployment_line(_deployment_json(dep)))


@model_app.command("reembed")
def reembed(
    model: str = typer.Argument(..., help="A ready model of the tenant (key or job id)"),
    tenant: str = TENANT,
    index: str = INDEX,
    settle: float = typer.Option(
        None,
        "--settle-s",
        min=0,
        help="Wait this long before the final sweep (default: VITRINE_DEPLOYMENT_CACHE_TTL_S + 10 s, so running "
        "workers know the model); 0 when no worker runs",
    ),
    as_json: bool = JSON,
    verbose: bool = VERBOSE,
) -> None:
    """Deploy a model and run its re-embed here until it is ready: read (a tower: fetch and crop), map, write, index."""
    from db.models import ModelDeployment
    from db.reembed import count_items
    from db.session import session_factory
    from streams.reembed import SETTLE_MARGIN_S, ModelCache, Reembedder
    from streams.tower_images import ImageCrops

    quiet_logging(verbose)
    settings = load_settings()
    dep, _ = _deploy(tenant, model, index)
    engine = database_engine()
    try:
        sessions = session_factory(engine)
        runner = Reembedder(
            engine,
            sessions,
            ModelCache(settings.data_dir / "models"),
            page=settings.reembed_page,
            pause_s=settings.reembed_pause_s,  # a live stack's catalog events and shoppers keep their latency
            settle_s=settings.deployment_cache_ttl_s + SETTLE_MARGIN_S if settle is None else settle,
            images=ImageCrops.from_settings(settings),
            image_page=settings.reembed_image_page,
            image_duty=settings.reembed_image_duty,
            retire_after_s=settings.deployment_cache_ttl_s + SETTLE_MARGIN_S,  # whatever --settle-s says
        )
        started = time.perf_counter()
        try:
            runner.run_until_idle()
        finally:
            runner.images.close()
        seconds = time.perf_counter() - started
        with sessions() as s:
            dep = s.get(ModelDeployment, (tenant, dep.model_key))
            total = count_items(s, tenant, dep.model_key)
    finally:
        engine.dispose()
    if dep.status != "ready":
        fail(deployment_line(_deployment_json(dep)))
    report = _deployment_json(dep) | {
        "source_key": dep.source_key,
        "items_now": total,
        "seconds": round(seconds, 2),
        "seconds_per_10k": round(seconds / dep.items_written * 10_000, 2) if dep.items_written else None,
    }
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        typer.echo(
            f"{tenant}: {dep.model_key} ready with {total} vectors ({dep.items_written} written from "
            f"{'the images of ' if dep.needs_images else ''}{dep.source_key} by this deployment, the rest by "
            f"ingest; {dep.items_failed} without) in {report['seconds']} s"
        )


@model_app.command("activate")
def activate(
    model: str = typer.Argument(..., help="A ready deployment's model key, or the pretrained model's"),
    tenant: str = TENANT,
    as_json: bool = JSON,
) -> None:
    """Serve this model on the tenant's plain `visual` arm (the API sees it within its lookup cache TTL)."""
    _switch(tenant, model, as_json)


@model_app.command("rollback")
def rollback(tenant: str = TENANT, as_json: bool = JSON) -> None:
    """Point the tenant's `visual` arm back at the previous model (its vectors and index are still there)."""
    _switch(tenant, None, as_json)


@model_app.command("retire")
def retire(
    model: str = typer.Argument(..., help="A deployed model of the tenant (key or job id; not the active one)"),
    tenant: str = TENANT,
    as_json: bool = JSON,
) -> None:
    """Stop serving and writing a deployed model; the workers then delete its vectors and index."""
    from db import retirement
    from db.deployments import DeploymentError
    from db.trained_models import get_model

    def action(s):
        job = get_model(s, tenant, model)
        return _deployment_json(retirement.retire(s, tenant, job.model_key if job and job.model_key else model))

    try:
        state = _in_transaction(action)
    except DeploymentError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(state))
    else:
        typer.echo(f"{tenant}: {model} is retiring; the workers delete its vectors and index")


def _switch(tenant: str, model: str | None, as_json: bool) -> None:
    from db import deployments

    embedder_key = _embedder_key()

    def action(s):
        if model is None:
            t = deployments.rollback(s, tenant, embedder_key=embedder_key)
        else:
            t = deployments.activate(s, tenant, model, embedder_key=embedder_key)
        return {"tenant": tenant, "active_model": t.active_model, "previous_model": t.previous_model}

    try:
        state = _in_transaction(action)
    except deployments.DeploymentError as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(state))
    else:
        typer.echo(f"{tenant}: visual serves {state['active_model']} (rollback: {state['previous_model']})")


@model_app.command("deployments")
def deployments_(
    tenant: str = typer.Option(None, "--tenant", "-t", help="Only this tenant"),
    as_json: bool = JSON,
) -> None:
    """Every model deployment (or one tenant's) with its re-embed progress."""
    from db.deployments import list_deployments

    rows = _in_transaction(lambda s: [_deployment_json(d) for d in list_deployments(s, tenant)])
    if as_json:
        typer.echo(json.dumps({"deployments": rows}))
        return
    for row in rows:
        typer.echo(f"{row['tenant']:<16} " + deployment_line(row))
    if not rows:
        typer.echo("(no deployments; `vitrine model deploy KEY --tenant T`)")
