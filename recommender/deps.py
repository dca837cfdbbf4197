"""FastAPI dependencies: settings, DB sessions, the Kafka producer, the authenticated tenant."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request
from sqlalchemy.orm import Session

from db.models import Tenant
from db.tenants import tenant_by_storefront_key
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


def storefront_tenant(session: SessionDep,
                      x_vitrine_key: Annotated[str | None, Header(description="Storefront key")] = None) -> Tenant:
    """The tenant whose storefront key was sent; every storefront query is scoped to it."""
    if not x_vitrine_key:
        raise HTTPException(401, "missing X-Vitrine-Key header (the tenant's storefront key)")
    tenant = tenant_by_storefront_key(session, x_vitrine_key)
    if tenant is None:
        raise HTTPException(401, "unknown storefront key")
    return tenant


StorefrontTenant = Annotated[Tenant, Depends(storefront_tenant)]


def admin_tenant(session: SessionDep,
                 x_vitrine_admin_key: Annotated[str | None, Header(description="Tenant admin key")] = None) -> Tenant:
    """The tenant whose admin key was sent (experiments, results)."""
    from db.tenants import tenant_by_admin_key

    if not x_vitrine_admin_key:
        raise HTTPException(401, "missing X-Vitrine-Admin-Key header (the tenant's admin key)")
    tenant = tenant_by_admin_key(session, x_vitrine_admin_key)
    if tenant is None:
        raise HTTPException(401, "unknown admin key")
    return tenant


AdminTenant = Annotated[Tenant, Depends(admin_tenant)]
