"""`vitrine model list|show`: the trained-model registry for the operator (every tenant, or one with --tenant),
and the model card of an artefact file."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from vitrine.cli.app import database_engine, fail, model_app


def _row(job) -> dict:
    """A registry row as the operator sees it (paths, pid and host included, unlike the tenant's API)."""
    return {
        "tenant": job.tenant_id,
        "job_id": job.job_id,
        "method": job.method,
        "finetune": job.finetune,
        "status": job.status,
        "reason": job.reason,
        "model_key": job.model_key,
        "params": job.params,
        "artefact_path": job.artefact_path,
        "log_path": job.log_path,
        "pid": job.pid,
        "host": job.host,
        "created_at": job.created_at.isoformat(),
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "card": job.card,
    }


def headline(card: dict | None) -> str:
    """The trained model's held-out mAP@5 beside the pretrained one, when the card has them."""
    models = ((card or {}).get("metrics") or {}).get("models") or {}
    trained, pretrained = (models.get(k, {}).get("mAP@5") for k in ("trained", "pretrained"))
    if trained is None:
        return ""
    return f"mAP@5 {trained:.3f}" + (f" (pretrained {pretrained:.3f})" if pretrained is not None else "")


def _flatten(value, prefix: str = "") -> list[tuple[str, str]]:
    """Nested dicts as dotted `field value` lines (lists stay JSON on one line)."""
    if isinstance(value, dict) and value:
        return [line for k, v in value.items() for line in _flatten(v, f"{prefix}.{k}" if prefix else str(k))]
    return [(prefix, value if isinstance(value, str) else json.dumps(value))]


def _print_fields(fields: dict) -> None:
    lines = _flatten(fields)
    width = max((len(k) for k, _ in lines), default=0)
    for key, value in lines:
        typer.echo(f"{key:<{width}}  {value}")


def _with_registry(action):
    """Run `action(session)` in one transaction (reaping this host's dead trainers first)."""
    from db.session import session_factory
    from db.trained_models import reap_dead_jobs
    from recommender.training_jobs import LocalProcesses

    engine = database_engine()
    try:
        with session_factory(engine).begin() as s:
            reap_dead_jobs(s, None, LocalProcesses().alive)  # only jobs started on this host are checked
            return action(s)
    finally:
        engine.dispose()


@model_app.command("list")
def list_(
    tenant: str = typer.Option(None, "--tenant", "-t", help="Only this tenant's jobs (default: every tenant)"),
    as_json: bool = typer.Option(False, "--json", help="One JSON object instead of a table"),
) -> None:
    """List training jobs and models, newest first: status, model key, held-out mAP@5, or why it failed."""
    from db.trained_models import list_models

    rows = _with_registry(lambda s: [(_row(job), headline(job.card)) for job in list_models(s, tenant)])
    if as_json:
        typer.echo(json.dumps({"models": [row for row, _ in rows]}))
        return
    if not rows:
        typer.echo("no training jobs" + (f" for tenant {tenant}" if tenant else ""))
        return
    typer.echo(f"{'job':<12} {'tenant':<16} {'method':<12} {'depth':<9} {'status':<9} {'created':<17} model / reason")
    for row, metrics in rows:
        depth = "finetune" if row["finetune"] else "head"
        outcome = row["reason"] if row["status"] == "failed" else " ".join(filter(None, [row["model_key"], metrics]))
        typer.echo(
            f"{row['job_id'][:12]:<12} {row['tenant']:<16} {row['method']:<12} {depth:<9} {row['status']:<9} "
            f"{row['created_at'][:16]:<17} {outcome or ''}"
        )


def _is_path(ref: str) -> bool:
    from vision.trained import SUFFIX

    return ref.endswith(SUFFIX) or "/" in ref or Path(ref).is_file()


@model_app.command("show")
def show(
    ref: str = typer.Argument(..., metavar="KEY_OR_JOB_OR_PATH", help="A model key, a job id, or an artefact file"),
    tenant: str = typer.Option(None, "--tenant", "-t", help="Look only among this tenant's jobs"),
    as_json: bool = typer.Option(False, "--json", help="One JSON object instead of a table"),
) -> None:
    """Show one job or model with its model card; a path to an artefact file prints that file's card."""
    if _is_path(ref):
        from vision.model import ModelLoadError
        from vision.trained import read_card

        try:
            out = read_card(Path(ref))
        except ModelLoadError as exc:
            fail(str(exc))
    else:
        from db.trained_models import get_model

        def find(s) -> dict | None:
            job = get_model(s, tenant, ref)
            return _row(job) if job else None

        out = _with_registry(find)
        if out is None:
            fail(f"no training job or model {ref!r}" + (f" for tenant {tenant!r}" if tenant else ""))
    if as_json:
        typer.echo(json.dumps(out))
    else:
        _print_fields(out)
