"""FastAPI dependencies: settings, DB sessions, the Kafka producer, the authenticated tenant."""

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader
from sqlalchemy.orm import Session

from core.settings import Settings
from db.models import Tenant
from db.tenants import hash_key, tenant_by_admin_key, tenant_by_storefront_key
from recommender.ttl_cache import MISSING
from streams.producer import EventProducer


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


def _tenant_by_key(
    header: str, find: Callable[[Session, str], Tenant | None], what: str, *, scheme: str, cached: bool = False
):
    """A dependency that authenticates the tenant by the key in `header` (401 if missing or unknown).

    The lookup runs in a short session of its own, returned to the pool at once: a request-scoped
    session would hold its connection until the response is sent while the handler opens another
    one, and under load every pooled connection would end up waiting (a deadlock).

    `cached`: known keys are kept in `app.state.tenant_cache` (keyed by the header and the key's
    digest, so a key only ever maps to the tenant the database gave for that very header); a hit
    costs no thread hop and no query. Unknown keys are never cached, so a new key works at once;
    a revoked key or a changed default arm shows within `lookup_cache_ttl_s`.
    """
    # A security scheme, not a plain header parameter: the OpenAPI schema then says which operations need
    # which key (clients and Schemathesis authenticate from it). Our own 401 names what is missing.
    api_key = APIKeyHeader(name=header, scheme_name=scheme, description=what, auto_error=False)

    def lookup(request: Request, credential: str) -> Tenant | None:
        with request.app.state.sessions() as session:
            tenant = find(session, credential)
            session.commit()  # not the pool's rollback, which makes psycopg drop the connection's prepared statements
            return tenant  # sessions do not expire on commit or close: attributes stay loaded

    async def dependency(
        request: Request,  # the parameter name must not clash with a route's path parameters
        credential: Annotated[str | None, Security(api_key)] = None,
    ) -> Tenant:
        if not credential:
            raise HTTPException(401, f"missing {header} header ({what})")
        cache = request.app.state.tenant_cache if cached else None
        key = (header, hash_key(credential))
        tenant = cache.get(key) if cache is not None else MISSING
        if tenant is MISSING:
            tenant = await run_in_threadpool(lookup, request, credential)
            if tenant is not None and cache is not None:
                cache.put(key, tenant)
        if tenant is None:
            raise HTTPException(401, f"unknown {what}")
        request.state.tenant_id = tenant.id  # the CORS middleware answers for this tenant's origins only
        return tenant

    return dependency


# Every storefront query is scoped to the key's tenant; admin keys open experiments and results
# (rare calls: never cached, so a revoked admin key stops working at once).
StorefrontTenant = Annotated[
    Tenant,
    Depends(
        _tenant_by_key(
            "X-Vitrine-Key",
            tenant_by_storefront_key,
            "the tenant's storefront key",
            scheme="StorefrontKey",
            cached=True,
        )
    ),
]
AdminTenant = Annotated[
    Tenant,
    Depends(_tenant_by_key("X-Vitrine-Admin-Key", tenant_by_admin_key, "the tenant's admin key", scheme="AdminKey")),
]
