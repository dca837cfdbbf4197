"""`vitrine dashboard`: run the Streamlit app with the resolved settings, bound to localhost by default;
`vitrine dashboard screenshots`: the results page in headless Chromium, one PNG per experiment state."""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path

import typer

from vitrine.cli.app import app, fail, setup_logging
from vitrine.cli.stack import resolved_settings

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "dashboards" / "server.py"  # the Streamlit app (app.py) plus the sign-in cookie's routes
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
SECRET_FILE = Path("dashboard") / "cookie-secret"

dashboard_app = typer.Typer(
    help="Serve the Streamlit dashboards; `screenshots` renders the results page in headless Chromium.",
    invoke_without_command=True,
)
app.add_typer(dashboard_app, name="dashboard")


def cookie_secret(settings) -> str:
    """VITRINE_DASHBOARD_SECRET, else a random one kept (0600) under the data dir so restarts keep sign-ins."""
    configured = settings.dashboard_secret.get_secret_value()
    if configured:
        return configured
    path = Path(settings.data_dir) / SECRET_FILE
    if path.is_file():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return path.read_text().strip()


def dashboard_env(settings, password: str | None) -> dict[str, str]:
    """The child's environment: resolved VITRINE_* settings, the password digest, the project on sys.path."""
    from dashboards.auth import PASSWORD_DIGEST_ENV, password_digest

    env = dict(os.environ)
    # Resolved addresses, so the app finds the embedded stack even when started elsewhere.
    env.update(
        {
            "VITRINE_DATA_DIR": str(Path(settings.data_dir).resolve()),
            "VITRINE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "VITRINE_DATABASE_URL": settings.database_url,
            "VITRINE_TOPIC_PREFIX": settings.topic_prefix,
            "VITRINE_APP_ID": settings.app_id,
        }
    )
    env.pop("VITRINE_DASHBOARD_PASSWORD", None)  # the app only ever sees the digest
    env["VITRINE_DASHBOARD_SECRET"] = cookie_secret(settings)
    if password:
        env[PASSWORD_DIGEST_ENV] = password_digest(password)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


@dashboard_app.callback()
def dashboard(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", "--host", help="Bind address (default: localhost only)"),
    port: int = typer.Option(8501, "--port", "-p", help="HTTP port"),
    password: str = typer.Option(
        None,
        "--password",
        envvar="VITRINE_DASHBOARD_PASSWORD",
        show_default=False,
        help="Operator password that opens every tenant (else: tenant admin keys only)",
    ),
) -> None:
    """Serve the Streamlit dashboards (experiments, catalog explorer, pipeline health).

    Sign in with a tenant admin key (that tenant's data only), the VITRINE_ADMIN_KEY, or the
    --password / VITRINE_DASHBOARD_PASSWORD (every tenant). A sign-in lasts VITRINE_DASHBOARD_SESSION_S
    (a signed HttpOnly cookie), across reloads and deep links.
    """
    if ctx.invoked_subcommand is not None:
        return
    settings = resolved_settings()
    if host not in LOOPBACK and not (password or settings.admin_key.get_secret_value()):
        typer.secho(
            f"warning: serving on {host} with tenant admin keys as the only credential; put it behind TLS",
            err=True,
            fg=typer.colors.YELLOW,
        )
    if not APP.is_file():
        fail(f"dashboard app not found at {APP}")
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
        "--client.toolbarMode",
        "viewer",
        "--global.developmentMode",
        "false",
    ]
    typer.echo(f"dashboard on http://{host if ':' not in host else f'[{host}]'}:{port}", err=True)
    # exec, not a child: signals (Ctrl-C, a supervisor's SIGTERM) reach Streamlit directly.
    os.execve(sys.executable, cmd, dashboard_env(settings, password))


@dashboard_app.command()
def screenshots(
    out: Path = typer.Option(Path("docs"), "--out", help="Folder for the PNGs (results-<state>.png)"),
    state: list[str] = typer.Option(
        None, "--state", help="Only these states (repeatable): running, stopped, draft, srm, guardrail"
    ),
    width: int = typer.Option(1280, "--width", help="Browser window width in CSS pixels"),
    as_json: bool = typer.Option(False, "--json", help="Print the files and timings as one JSON object"),
) -> None:
    """Seed an embedded Postgres with simulated traffic and save the results page per state (headless Chromium).

    Needs Debian's chromium and chromium-driver and selenium; starts its own Postgres and dashboard
    (no broker), so it runs beside `vitrine up` without touching it.
    """
    from vitrine.screenshots import STATES, BrowserMissing, take_screenshots

    setup_logging()
    unknown = sorted(set(state or []) - set(STATES))
    if unknown:
        fail(f"unknown state(s) {', '.join(unknown)}; known: {', '.join(STATES)}", code=2)
    try:
        result = take_screenshots(out, states=state or list(STATES), width=width)
    except BrowserMissing as exc:
        fail(str(exc))
    problems = [
        f"{shot['state']}: "
        + ", ".join(
            (["shows " + "/".join(shot["bad_words"])] if shot["bad_words"] else [])
            + (["wider than the window"] if shot["overflow_x"] else [])
        )
        for shot in result["screenshots"]
        if shot["bad_words"] or shot["overflow_x"]
    ]
    for shot in result["screenshots"]:
        shot.pop("text")
    if as_json:
        typer.echo(json.dumps(result | {"problems": problems}, indent=2))
    else:
        for shot in result["screenshots"]:
            size = f"{shot['width']}x{shot['height']} px"
            typer.echo(f"{shot['state']:<10} {shot['path']}  ({size}, {shot['seconds']:.1f} s)")
    if problems:
        fail("; ".join(problems))
