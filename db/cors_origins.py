"""Per-tenant CORS origins (`tenants.cors_origins`, migration 0010): validated, stored, and looked up by origin."""

from __future__ import annotations

from urllib.parse import urlsplit

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from db.models import Tenant


def normalize_origin(origin: str) -> str:
    """`origin` as browsers send it (`https://shop.example.com[:port]`, lower case), or ValueError saying why."""
    text = origin.strip()
    try:
        parts = urlsplit(text)
        port = parts.port  # raises on a non-numeric or out-of-range port
    except ValueError as exc:
        raise ValueError(f"bad origin {origin!r}: {exc}") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"bad origin {origin!r}: want http(s)://host[:port]")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"bad origin {origin!r}: an origin has no path, query, fragment or credentials")
    host = parts.hostname.lower()
    if ":" in host:  # IPv6 literal: browsers keep the brackets
        host = f"[{host}]"
    return f"{parts.scheme.lower()}://{host}{f':{port}' if port is not None else ''}"


def set_cors_origins(session: Session, tenant_id: str, origins: list[str]) -> list[str]:
    """Replace the tenant's allowed origins (normalised, de-duplicated, sorted); KeyError if no such tenant."""
    clean = sorted({normalize_origin(o) for o in origins})
    done = session.execute(update(Tenant).where(Tenant.id == tenant_id).values(cors_origins=clean))
    if done.rowcount == 0:
        raise KeyError(tenant_id)
    return clean


def cors_origins(session: Session, tenant_id: str) -> list[str]:
    """The tenant's allowed origins; KeyError if no such tenant."""
    origins = session.scalar(select(Tenant.cors_origins).where(Tenant.id == tenant_id))
    if origins is None:
        raise KeyError(tenant_id)
    return list(origins)


def tenants_by_origin(session: Session) -> dict[str, frozenset[str]]:
    """Every allowed origin -> the tenants that allow it (the CORS middleware's table)."""
    rows = session.execute(
        select(func.unnest(Tenant.cors_origins).label("origin"), Tenant.id).where(
            func.cardinality(Tenant.cors_origins) > 0
        )
    ).all()
    table: dict[str, set[str]] = {}
    for origin, tenant_id in rows:
        table.setdefault(origin, set()).add(tenant_id)
    return {origin: frozenset(ids) for origin, ids in table.items()}
