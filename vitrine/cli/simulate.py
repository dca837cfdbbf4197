"""`vitrine simulate shoppers`: seeded simulated shoppers against any deployment's storefront API.

The behaviour model is `vitrine/shoppers.py`, written out in docs/shoppers.md. Exit codes: 0 ran;
1 bad input, or not one recommendation answered; 2 usage; 3 Postgres unreachable (no --catalog).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from vitrine.cli.app import UNREACHABLE, USAGE, app, fail, load_settings, setup_logging

simulate_app = typer.Typer(help="Simulated traffic through the real HTTP API (labelled sim-).", no_args_is_help=True)
app.add_typer(simulate_app, name="simulate")


@simulate_app.command("shoppers")
def shoppers(
    tenant: str = typer.Option(..., "--tenant", "-t", help="Tenant id (whose catalog the shoppers browse)"),
    experiment: str = typer.Option(
        None, "--experiment", "-k", help="The experiment key traffic should land in (a warning when it does not)"
    ),
    users: int = typer.Option(100, "--users", "-n", min=1, help="Simulated shoppers (user ids sim-<seed>-<n>)"),
    rate: float = typer.Option(20.0, "--rate", "-r", min=0.0, help="Recommendation requests per second (0: no limit)"),
    seed: int = typer.Option(
        0, "--seed", min=0, max=2**31 - 1, help="Seed of the population: the same seed means the same shoppers"
    ),
    concurrency: int = typer.Option(16, "--concurrency", min=1, help="Shoppers in flight at once"),
    same_category: bool = typer.Option(
        False, "--same-category", help="Ask for neighbours in the viewed product's category (a storefront setting)"
    ),
    catalog: Path = typer.Option(
        None,
        "--catalog",
        help="Feed (.jsonl/.csv, optionally .gz) the shoppers perceive; default: the tenant's "
        "in-stock products in Postgres",
    ),
    attributes: str = typer.Option(
        None,
        "--attributes",
        help="Comma-separated attributes shoppers perceive, e.g. design,colour,subject "
        "(default: all text, integer and boolean attributes)",
    ),
    api: str = typer.Option(None, "--api", help="API base URL (default: the local API from the settings)"),
    storefront_key: str = typer.Option(
        None, "--storefront-key", envvar="VITRINE_STOREFRONT_KEY", show_envvar=True, help="The tenant's storefront key"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging"),
) -> None:
    """Run seeded shoppers through GET /v1/recommendations and POST /v1/events; print what they did."""
    from core.machine import machine_info
    from vitrine.shoppers import RunOptions, run_shoppers

    setup_logging(verbose)
    if not storefront_key:
        fail("no storefront key: pass --storefront-key or set VITRINE_STOREFRONT_KEY", USAGE)
    settings = load_settings()
    keys = {k.strip() for k in attributes.split(",") if k.strip()} if attributes else None
    shop_catalog, bad_lines = _catalog(settings, tenant, catalog, keys)
    if api is None:
        host = "127.0.0.1" if settings.api_host in ("0.0.0.0", "::", "") else settings.api_host
        api = f"http://{host}:{settings.api_port}"
    if not api.startswith(("http://", "https://")):
        fail(f"--api must be an http(s) URL, got {api!r}", USAGE)

    def progress(done: int, total: int) -> None:
        if not as_json and (done == total or done % max(1, total // 10) == 0):
            typer.echo(f"  {done}/{total} shoppers done", err=True)

    summary = run_shoppers(
        shop_catalog,
        api=api,
        storefront_key=storefront_key,
        tenant=tenant,
        users=users,
        rate=rate,
        seed=seed,
        experiment=experiment,
        concurrency=concurrency,
        options=RunOptions(same_category=same_category),
        progress=progress,
    )
    machine = machine_info()
    report = {
        "what": "simulated shoppers",
        "catalog": str(catalog) if catalog else "postgres",
        "catalog_bad_lines": len(bad_lines),
        "perceived_attributes": sorted(keys) if keys else "all",
        "same_category": same_category,
        **summary.as_dict(),
        "machine": {k: machine[k] for k in ("cpu", "cores", "usable_cpus", "python", "load_average_1m")},
    }
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        _print_table(report, bad_lines)
    if summary.requests == 0 and users > 0:
        kinds = summary.errors_by_kind
        worst = max(kinds, key=kinds.get) if kinds else "no response"
        fail(f"no recommendation request succeeded (most frequent: {worst}); is {api} the tenant's API and key?")


def _catalog(settings, tenant: str, path: Path | None, keys: set[str] | None):
    """The shoppers' catalog from the feed, else from Postgres; exits with one line when neither works."""
    from vitrine.shoppers import load_catalog, read_feed

    if path is not None:
        try:
            return read_feed(path, tenant, keys)
        except ValueError as exc:
            fail(str(exc))
    from sqlalchemy.exc import OperationalError

    from core.settings import StackNotRunning
    from db.session import create_db_engine, session_factory
    from vitrine.cli.catalog import postgres_unreachable

    try:
        url = settings.database_url or settings.resolved().database_url
    except StackNotRunning as exc:
        fail(f"no --catalog given and no database to read the catalog from: {exc}", UNREACHABLE)
    engine = create_db_engine(url)
    try:
        with session_factory(engine)() as session:
            return load_catalog(session, tenant, keys), []
    except OperationalError as exc:
        fail(f"{postgres_unreachable(exc)} (or pass --catalog FEED)", UNREACHABLE)
    except ValueError as exc:
        fail(str(exc))
    finally:
        engine.dispose()


def _print_table(r: dict, bad_lines: list[str]) -> None:
    m = r["machine"]
    typer.echo(
        f"simulated shoppers: {r['users']} users, rate {r['rate']:g} req/s, seed {r['seed']}, "
        f"concurrency {r['concurrency']}, tenant {r['tenant']}, api {r['api']}"
    )
    typer.echo(f"machine: {m['cpu']}, {m['usable_cpus']} usable CPUs, load {m['load_average_1m']}")
    typer.echo(f"catalog: {r['catalog_products']} products from {r['catalog']}")
    for line in bad_lines[:5]:
        typer.echo(f"  skipped feed {line}")
    if len(bad_lines) > 5:
        typer.echo(f"  ... and {len(bad_lines) - 5} more bad feed lines")
    latency = f"p50 {r['latency_p50_ms']} ms, p99 {r['latency_p99_ms']} ms" if r["latency_p50_ms"] is not None else "-"
    typer.echo(
        f"\nsessions {r['sessions']}, requests {r['requests']} in {r['elapsed_s']:.1f} s "
        f"({r['achieved_rps']} req/s; latency {latency})"
    )
    typer.echo(
        f"events: {r['events_accepted']} accepted, {r['events_duplicates']} duplicates, {r['events_failed']} failed; "
        f"retries {r['retries']}"
    )
    typer.echo(f"\n{'arm':<40}{'exposures':>10}{'clicks':>8}{'CTR':>7}{'carts':>7}{'purchases':>10}{'revenue':>11}")
    rows = [*sorted(r["by_arm"].items()), ("total", {**r, "exposures": r["requests"]})]
    for arm, f in rows:
        ctr = f"{f['clicks'] / f['exposures']:.3f}" if f["exposures"] else "-"
        typer.echo(
            f"{arm:<40}{f['exposures']:>10}{f['clicks']:>8}{ctr:>7}{f['carts']:>7}{f['purchases']:>10}"
            f"{f['revenue']:>11.2f}"
        )
    experiments = ", ".join(f"{k if k != '-' else '(none)'}: {v}" for k, v in sorted(r["experiments"].items()))
    typer.echo(f"\nexperiments named by the responses: {experiments or '-'}")
    if r["unknown_shown"]:
        typer.echo(f"shown products unknown to the simulator's catalog: {r['unknown_shown']}")
    typer.echo(f"errors: {r['errors']}" + "".join(f"\n  {k}: {v}" for k, v in sorted(r["errors_by_kind"].items())))
    for w in r["warnings"]:
        typer.secho(f"warning: {w}", fg=typer.colors.YELLOW)
