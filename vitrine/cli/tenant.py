"""`vitrine tenant set-secret|rotate|revoke|audit`: a tenant's keys and webhook secret, audited.

A secret is read from stdin or a hidden prompt, never from the command line (argv is visible in
`ps` and shell history); a generated one is printed to stdout once and logged nowhere.
"""

from __future__ import annotations

import getpass
import json
import re
import socket
import sys

import typer

from vitrine.cli.app import database_engine, fail, tenant_app

_DURATION = re.compile(r"^(\d+)([smhd]?)$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
CREDENTIAL_HELP = "storefront_key, admin_key or webhook_secret"


def cli_actor() -> str:
    """Who made a change from this shell, for the audit trail."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        user = "unknown"
    return f"cli:{user}@{socket.gethostname()}"


def parse_duration(text: str) -> int:
    """Seconds in '90', '30s', '15m', '24h' or '7d'."""
    m = _DURATION.match(text.strip())
    if not m:
        raise typer.BadParameter(f"{text!r} is not a duration: use e.g. 0, 30m, 24h or 7d")
    return int(m.group(1)) * _UNIT_S[m.group(2)]


def _change(fn, *, as_json: bool, **kwargs) -> None:
    from db.session import session_factory
    from db.tenants import CredentialError

    engine = database_engine()
    try:
        with session_factory(engine).begin() as session:
            change = fn(session, **kwargs)
    except CredentialError as exc:
        fail(str(exc))
    finally:
        engine.dispose()
    until = change.previous_valid_until.isoformat() if change.previous_valid_until else None
    if as_json:
        doc = {k: getattr(change, k) for k in ("tenant_id", "credential", "action", "fingerprint", "secret")}
        typer.echo(json.dumps({**doc, "previous_valid_until": until}))
        return
    typer.echo(f"{change.action} {change.credential} of {change.tenant_id}: fingerprint {change.fingerprint}")
    typer.echo(f"previous one works until {until}" if until else "previous one stopped working now")
    if change.secret:
        typer.echo(f"new {change.credential.replace('_', ' ')}  {change.secret}")
        typer.echo("store it now: it is not shown again.")


@tenant_app.command("set-secret")
def set_secret(
    tenant: str = typer.Argument(..., help="Tenant id"),
    secret_stdin: bool = typer.Option(
        False, "--secret-stdin", help="Read the secret from stdin (else a hidden prompt)"
    ),
    grace: str = typer.Option("24h", help="How long the replaced secret keeps working: 0, 30m, 24h, 7d"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object"),
) -> None:
    """Set the webhook signing secret Shopify chose (from stdin, never argv); the old one works for GRACE."""
    from db.tenants import set_webhook_secret

    secret = sys.stdin.readline().rstrip("\r\n") if secret_stdin else typer.prompt("webhook secret", hide_input=True)
    _change(
        set_webhook_secret,
        as_json=as_json,
        tenant_id=tenant,
        secret=secret,
        grace_s=parse_duration(grace),
        actor=cli_actor(),
    )


@tenant_app.command("rotate")
def rotate(
    tenant: str = typer.Argument(..., help="Tenant id"),
    credential: str = typer.Argument(..., help=CREDENTIAL_HELP),
    grace: str = typer.Option("24h", help="How long the replaced one keeps working: 0, 30m, 24h, 7d"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object"),
) -> None:
    """Issue a new key or webhook secret (printed once); the replaced one keeps working for GRACE."""
    from db.tenants import rotate as rotate_credential

    _change(
        rotate_credential,
        as_json=as_json,
        tenant_id=tenant,
        credential=credential,
        grace_s=parse_duration(grace),
        actor=cli_actor(),
    )


@tenant_app.command("revoke")
def revoke(
    tenant: str = typer.Argument(..., help="Tenant id"),
    credential: str = typer.Argument(..., help=CREDENTIAL_HELP),
    previous_only: bool = typer.Option(False, "--previous-only", help="End only a rotated-out one's grace period"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object"),
) -> None:
    """Stop a key or webhook secret (and any previous one) now and issue a new one, printed once."""
    from db.tenants import revoke as revoke_credential

    _change(
        revoke_credential,
        as_json=as_json,
        tenant_id=tenant,
        credential=credential,
        actor=cli_actor(),
        previous_only=previous_only,
    )


@tenant_app.command("audit")
def audit(
    tenant: str = typer.Option(None, "--tenant", help="One tenant (default: all)"),
    limit: int = typer.Option(100, min=1, help="Newest N changes"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object"),
) -> None:
    """List credential changes, newest first: who, what, when (fingerprints, never the credentials)."""
    from db.session import session_factory
    from db.tenants import audit_log

    engine = database_engine()
    try:
        with session_factory(engine)() as session:
            rows = [
                {
                    "tenant_id": r.tenant_id,
                    "credential": r.credential,
                    "action": r.action,
                    "actor": r.actor,
                    "fingerprint": r.fingerprint,
                    "previous_valid_until": r.previous_valid_until.isoformat() if r.previous_valid_until else None,
                    "at": r.at.isoformat(),
                }
                for r in audit_log(session, tenant, limit=limit)
            ]
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps({"changes": rows}))
        return
    typer.echo(f"{'at':<25} {'tenant':<16} {'credential':<15} {'action':<7} {'fingerprint':<12}  actor")
    for r in rows:
        typer.echo(
            f"{r['at'][:25]:<25} {r['tenant_id']:<16} {r['credential']:<15} {r['action']:<7} "
            f"{r['fingerprint'] or '':<12}  {r['actor']}"
        )
