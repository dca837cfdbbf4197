"""A tenant's own credentials, for its admin key: set Shopify's webhook secret, rotate, revoke, read the audit.

A generated key or secret is in the answer once (`Cache-Control: no-store`) and nowhere else: only
its digest (keys) or the secret itself (HMAC needs it) is stored, and the audit keeps a fingerprint.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response
from pydantic import BaseModel, BeforeValidator, Field, StrictBool

from db import tenants as repo
from recommender.deps import AdminTenant, SessionDep
from recommender.errors import JSONRoute
from recommender.schemas import Problem

router = APIRouter(prefix="/v1/tenant", tags=["credentials"], route_class=JSONRoute)
Credential = Annotated[Literal["storefront_key", "admin_key", "webhook_secret"], Path()]


def _not_bool(v):
    if isinstance(v, bool):  # lax ints take JSON's true/false; a grace period of `false` is a mistake
        raise ValueError("a number of seconds, not a boolean")
    return v


GraceSeconds = Annotated[int, BeforeValidator(_not_bool)]
Grace = Field(86400, ge=0, le=repo.MAX_GRACE_S, description="Seconds the replaced credential keeps working")
ERRORS = {401: {"model": Problem}, 422: {"model": Problem}}


class SecretIn(BaseModel):
    secret: str = Field(
        min_length=16, max_length=512, pattern=r"^[\x21-\x7e]+$", description="The signing secret Shopify shows"
    )
    grace_s: GraceSeconds = Grace


class RotateIn(BaseModel):
    grace_s: GraceSeconds = Grace


class RevokeIn(BaseModel):
    previous_only: StrictBool = Field(False, description="End only a rotated-out credential's grace period")


class CredentialOut(BaseModel):
    credential: str
    action: str
    fingerprint: str = Field(description="First 12 hex digits of the SHA-256 of the credential now in force")
    previous_valid_until: datetime | None
    secret: str | None = Field(None, description="The new key or secret, shown this once; null when you chose it")


class AuditOut(BaseModel):
    credential: str
    action: str
    actor: str
    fingerprint: str | None
    previous_valid_until: datetime | None
    at: datetime


def _done(request: Request, response: Response, session, change: repo.CredentialChange) -> CredentialOut:
    session.commit()
    response.headers["Cache-Control"] = "no-store"
    if change.credential == "storefront_key":  # this process stops serving the old key now, others within the TTL
        request.app.state.tenant_cache.clear()
    return CredentialOut(**{k: getattr(change, k) for k in CredentialOut.model_fields})


def _actor(request: Request) -> str:
    return f"api:admin-key:{repo.fingerprint(request.headers.get('X-Vitrine-Admin-Key', ''))}"


@router.put("/webhook-secret", response_model=CredentialOut, responses={**ERRORS, 409: {"model": Problem}})
def set_webhook_secret(
    request: Request, response: Response, body: SecretIn, tenant: AdminTenant, session: SessionDep
) -> CredentialOut:
    """Put the webhook signing secret Shopify chose in force; the previous one works `grace_s` more."""
    try:
        change = repo.set_webhook_secret(session, tenant.id, body.secret, grace_s=body.grace_s, actor=_actor(request))
    except repo.CredentialError as exc:
        raise HTTPException(409 if isinstance(exc, repo.CredentialConflict) else 422, str(exc)) from None
    return _done(request, response, session, change)


@router.post("/credentials/{credential}/rotate", response_model=CredentialOut, responses=ERRORS)
def rotate(
    request: Request,
    response: Response,
    credential: Credential,
    body: RotateIn,
    tenant: AdminTenant,
    session: SessionDep,
) -> CredentialOut:
    """Issue a new credential (in the answer, once); the replaced one keeps working for `grace_s` seconds."""
    change = repo.rotate(session, tenant.id, credential, grace_s=body.grace_s, actor=_actor(request))
    return _done(request, response, session, change)


@router.post("/credentials/{credential}/revoke", response_model=CredentialOut, responses=ERRORS)
def revoke(
    request: Request,
    response: Response,
    credential: Credential,
    body: RevokeIn,
    tenant: AdminTenant,
    session: SessionDep,
) -> CredentialOut:
    """Stop the credential (and any previous one) at once and issue a new one; or end only a grace period."""
    change = repo.revoke(session, tenant.id, credential, actor=_actor(request), previous_only=body.previous_only)
    return _done(request, response, session, change)


@router.get("/credentials/audit", response_model=list[AuditOut], responses={401: {"model": Problem}})
def audit(
    tenant: AdminTenant, session: SessionDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[AuditOut]:
    """The tenant's credential changes, newest first (fingerprints, never the credentials)."""
    return [
        AuditOut.model_validate(row, from_attributes=True) for row in repo.audit_log(session, tenant.id, limit=limit)
    ]
