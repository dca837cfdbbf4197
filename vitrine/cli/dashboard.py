"""`vitrine dashboard`: run the Streamlit app with the resolved settings, bound to localhost by default."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from vitrine.cli.app import app, fail
from vitrine.cli.stack import resolved_settings

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "dashboards" / "app.py"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


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
    if password:
        env[PASSWORD_DIGEST_ENV] = password_digest(password)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


@app.command()
def dashboard(
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
    --password / VITRINE_DASHBOARD_PASSWORD (every tenant).
    """
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
