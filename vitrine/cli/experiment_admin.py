"""`vitrine experiment create|start|stop|list`: the same operations as the admin API."""

from __future__ import annotations

import json

import typer

from vitrine.cli.app import experiment_app, fail
from vitrine.cli.stack import resolved_settings


def _sessions():
    from db.session import create_db_engine, session_factory

    engine = create_db_engine(resolved_settings().database_url)
    return engine, session_factory(engine)


def _parse_arms(spec: str) -> list[dict]:
    """'baseline=0.5,visual=0.5' -> [{"name": "baseline", "weight": 0.5}, ...]."""
    arms = []
    for part in spec.split(","):
        name, _, weight = part.partition("=")
        try:
            arms.append({"name": name.strip(), "weight": float(weight)})
        except ValueError:
            fail(f"bad arm {part!r}: use name=weight, e.g. baseline=0.5,visual=0.5")
    return arms


def _parse_guardrail(spec: str) -> str | dict:
    """'conversion' -> 'conversion' (default margin); 'conversion:0.01' -> {"metric": ..., "margin": 0.01}."""
    metric, sep, margin = spec.partition(":")
    if not sep:
        return metric.strip()
    try:
        return {"metric": metric.strip(), "margin": float(margin)}
    except ValueError:
        fail(f"bad guardrail {spec!r}: use metric or metric:margin, e.g. conversion:0.01 (a relative loss)")


@experiment_app.command("create")
def create(
    key: str,
    tenant: str = typer.Option(..., "--tenant", "-t"),
    arms: str = typer.Option("baseline=0.5,visual=0.5", help="name=weight,... (weights sum to 1)"),
    placement: str = typer.Option("similar"),
    traffic: float = typer.Option(1.0, help="Fraction of users in"),
    metric: str = typer.Option("ctr", help="Primary metric: ctr, conversion, revenue_per_user, ..."),
    guardrail: list[str] = typer.Option(
        [], help="Metric that must not get worse, metric[:margin], margin a relative loss, default 0.02 (repeatable)"
    ),
    planned: int = typer.Option(None, help="Planned users, all arms together"),
    as_json: bool = typer.Option(False, "--json", help="Print the experiment as one JSON object"),
) -> None:
    """Create a draft experiment (start it with `vitrine experiment start`)."""
    from db.experiments import create_experiment
    from recommender.serving import check_arm_models
    from vision.components import build_embedder

    parsed = _parse_arms(arms)
    embedder_key = build_embedder(resolved_settings()).model_key  # its key only: no weights are loaded
    engine, sessions = _sessions()
    try:
        with sessions.begin() as s:
            check_arm_models(s, tenant, [str(a.get("name")) for a in parsed], embedder_key=embedder_key)
            exp = create_experiment(
                s,
                tenant,
                key,
                arms=parsed,
                placement=placement,
                traffic_fraction=traffic,
                primary_metric=metric,
                guardrails=[_parse_guardrail(g) for g in guardrail],
                planned_sample_size=planned,
            )
            if as_json:
                typer.echo(json.dumps(_experiment_json(exp)))
            else:
                typer.echo(f"created {exp.key} ({exp.status}) on {exp.placement}: {exp.arms}")
    except ValueError as exc:
        fail(str(exc))
    finally:
        engine.dispose()


def _experiment_json(exp) -> dict:
    """The experiment's stored fields, JSON-ready."""
    return {
        "key": exp.key,
        "tenant": exp.tenant_id,
        "status": exp.status,
        "placement": exp.placement,
        "arms": exp.arms,
        "traffic_fraction": exp.traffic_fraction,
        "primary_metric": exp.primary_metric,
        "guardrails": exp.guardrails,
        "planned_sample_size": exp.planned_sample_size,
        "created_at": _iso(exp.created_at),
        "started_at": _iso(exp.started_at),
        "stopped_at": _iso(exp.stopped_at),
    }


def _iso(value) -> str | None:
    return value.isoformat() if value else None


def _transition(action: str, key: str, tenant: str, as_json: bool = False) -> None:
    from db import experiments as repo

    engine, sessions = _sessions()
    try:
        with sessions.begin() as s:
            exp = (repo.start_experiment if action == "start" else repo.stop_experiment)(s, tenant, key)
            typer.echo(json.dumps(_experiment_json(exp)) if as_json else f"{exp.key} is {exp.status}")
    except repo.ExperimentError as exc:
        fail(str(exc))
    finally:
        engine.dispose()


@experiment_app.command("start")
def start(
    key: str,
    tenant: str = typer.Option(..., "--tenant", "-t"),
    as_json: bool = typer.Option(False, "--json", help="Print the experiment as one JSON object"),
) -> None:
    """Start a draft experiment: shoppers are assigned from now on (one running per placement)."""
    _transition("start", key, tenant, as_json)


@experiment_app.command("stop")
def stop(
    key: str,
    tenant: str = typer.Option(..., "--tenant", "-t"),
    as_json: bool = typer.Option(False, "--json", help="Print the experiment as one JSON object"),
) -> None:
    """Stop a running experiment: everyone gets the tenant's default arm again."""
    _transition("stop", key, tenant, as_json)


@experiment_app.command("list")
def list_(tenant: str = typer.Option(..., "--tenant", "-t"), as_json: bool = typer.Option(False, "--json")) -> None:
    """List the tenant's experiments with status, arms and dates."""
    from db.experiments import list_experiments

    engine, sessions = _sessions()
    with sessions() as s:
        rows = [
            {
                "key": e.key,
                "status": e.status,
                "placement": e.placement,
                "arms": e.arms,
                "traffic_fraction": e.traffic_fraction,
                "primary_metric": e.primary_metric,
                "guardrails": e.guardrails,
                "started_at": e.started_at.isoformat() if e.started_at else None,
                "stopped_at": e.stopped_at.isoformat() if e.stopped_at else None,
            }
            for e in list_experiments(s, tenant)
        ]
    engine.dispose()
    if as_json:
        typer.echo(json.dumps({"experiments": rows}))
        return
    typer.echo(f"{'key':<20} {'status':<8} {'placement':<10} {'metric':<10} arms")
    for r in rows:
        arms = ", ".join(f"{a['name']}={a['weight']:g}" for a in r["arms"])
        typer.echo(f"{r['key']:<20} {r['status']:<8} {r['placement']:<10} {r['primary_metric']:<10} {arms}")
