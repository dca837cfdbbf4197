"""FastAPI dependencies: settings, DB sessions, the Kafka producer, the authenticated tenant."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request
from sqlalchemy.orm import Session

from db.models import Tenant
from db.tenants import tenant_by_admin_key, tenant_by_storefront_key
from streams.producer import EventProducer
from vitrine.settings import Settings


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


def get_producer(request: Request) -> EventProducer:
    return request.app.state.producer


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
ProducerDep = Annotated[EventProducer, Depends(get_producer)]


def _lookup(request: Request, find, key: str) -> Tenant | None:
    """Find the tenant in a short session of its own, returned to the pool at once.

    A request-scoped session would hold its connection until the response is sent, while the
    handler opens another one: under load every pooled connection ends up waiting (deadlock).
    """
    with request.app.state.sessions() as session:
        return find(session, key)  # sessions do not expire on commit/close: attributes stay loaded


def storefront_tenant(request: Request,
                      x_vitrine_key: Annotated[str | None, Header(description="Storefront key")] = None) -> Tenant:
    """The tenant whose storefront key was sent; every storefront query is scoped to it."""
    if not x_vitrine_key:
        raise HTTPException(401, "missing X-Vitrine-Key header (the tenant's storefront key)")
    tenant = _lookup(request, tenant_by_storefront_key, x_vitrine_key)
    if tenant is None:
        raise HTTPException(401, "unknown storefront key")
    return tenant


StorefrontTenant = Annotated[Tenant, Depends(storefront_tenant)]


def admin_tenant(request: Request,
                 x_vitrine_admin_key: Annotated[str | None, Header(description="Tenant admin key")] = None) -> Tenant:
    """The tenant whose admin key was sent (experiments, results)."""
    if not x_vitrine_admin_key:
        raise HTTPException(401, "missing X-Vitrine-Admin-Key header (the tenant's admin key)")
    tenant = _lookup(request, tenant_by_admin_key, x_vitrine_admin_key)
    if tenant is None:
        raise HTTPException(401, "unknown admin key")
    return tenant


AdminTenant = Annotated[Tenant, Depends(admin_tenant)]
