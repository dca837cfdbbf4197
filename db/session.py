"""Engine and session construction; callers own transactions (repositories never commit)."""

from __future__ import annotations

from sqlalchemy import create_engine
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker


def normalize_url(url: str) -> str:
    """Use the psycopg 3 driver whatever scheme the user wrote (postgres://, postgresql://)."""
    u = make_url(url.replace("postgres://", "postgresql://", 1) if url.startswith("postgres://") else url)
    if u.drivername in ("postgresql", "postgresql+psycopg2"):
        u = u.set(drivername="postgresql+psycopg")
    return u.render_as_string(hide_password=False)


def libpq_url(url: str) -> str:
    """The same database as a plain postgresql:// URL, for `psycopg.connect` (libpq knows no "+psycopg")."""
    return make_url(normalize_url(url)).set(drivername="postgresql").render_as_string(hide_password=False)


def create_db_engine(url: str, *, pool_size: int = 5, **kwargs) -> Engine:
    """An Engine for `url` with pre-ping, so a restarted Postgres costs one retry, not an outage."""
    return create_engine(normalize_url(url), pool_size=pool_size, pool_pre_ping=True, **kwargs)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
