"""`vitrine tenant cors`: the browser origins allowed to call the storefront API with a tenant's key."""

from __future__ import annotations

import json

import typer

from vitrine.cli.app import UNREACHABLE, USAGE, fail, tenant_app
from vitrine.cli.stack import resolved_settings


@tenant_app.command("cors")
def tenant_cors(
    tenant: str = typer.Argument(..., help="Tenant id"),
    add: list[str] = typer.Option(
        None, "--add", "-a", help="Allow this origin (repeatable), e.g. https://shop.example"
    ),
    remove: list[str] = typer.Option(None, "--remove", "-r", help="Stop allowing this origin (repeatable)"),
    clear: bool = typer.Option(False, "--clear", help="Allow no browser origin at all"),
    as_json: bool = typer.Option(False, "--json", help='One JSON object {"tenant": id, "cors_origins": [...]}'),
) -> None:
    """Show or change the origins whose pages may call the API with this tenant's storefront key.

    Changes apply to running APIs within VITRINE_LOOKUP_CACHE_TTL_S; no restart needed.
    """
    from sqlalchemy.exc import OperationalError

    from db.cors_origins import cors_origins, normalize_origin, set_cors_origins
    from db.session import create_db_engine, session_factory
    from vitrine.cli.catalog import postgres_unreachable

    try:
        added = [normalize_origin(o) for o in add or ()]
        removed = {normalize_origin(o) for o in remove or ()}
    except ValueError as exc:
        fail(str(exc), USAGE)
    engine = create_db_engine(resolved_settings().database_url)
    try:
        with session_factory(engine).begin() as session:
            origins = [] if clear else cors_origins(session, tenant)
            if clear or added or removed:
                origins = set_cors_origins(session, tenant, [o for o in origins + added if o not in removed])
    except KeyError:
        fail(f"unknown tenant {tenant!r}")
    except OperationalError as exc:
        fail(postgres_unreachable(exc), UNREACHABLE)
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps({"tenant": tenant, "cors_origins": origins}))
    elif origins:
        typer.echo("\n".join(origins))
    else:
        typer.echo(f"no browser origin may call the API with {tenant}'s key")
