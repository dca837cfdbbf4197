"""Retiring a tenant's deployed model: it stops serving and being written at once, then its vectors go.

`retire` flips the deployment to `retiring` in the caller's transaction (refused while the model is the
tenant's active one or an arm of a draft or running experiment). The re-embed runner (streams/reembed.py)
claims it like any deployment once the workers' deployment cache can no longer hold it (and any lease of a
runner that was still embedding it has run out), drops its indexes, deletes its vectors and codes
`retire_page` by `retire_page` under the lease, then deletes the row (`forget`). Takes a session, never commits.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from sqlalchemy import delete, text
from sqlalchemy.orm import Session

from db.deployments import DeploymentError, renew_lease
from db.models import ModelDeployment, Tenant


def retire(session: Session, tenant_id: str, model_key: str) -> ModelDeployment:
    """Stop serving and writing the tenant's deployment of `model_key`; the runner then deletes its vectors,
    codes and index (after the workers' cache TTL, so no ingest still writes them) and the row.

    Refused (`in_use`) while it is the tenant's active model or an arm of a draft or running experiment; the
    rollback target may be retired (the tenant then has none). Retiring twice is harmless.
    """
    dep = session.get(ModelDeployment, (tenant_id, model_key), with_for_update=True)
    if dep is None:
        raise DeploymentError("not_deployed", f"model {model_key!r} is not deployed for tenant {tenant_id!r}")
    if dep.status == "retiring":
        return dep
    tenant = session.get(Tenant, tenant_id, with_for_update=True)
    if tenant.active_model == model_key:
        raise DeploymentError("in_use", f"model {model_key!r} is the tenant's active model: activate another one first")
    arms = session.scalars(
        text("""SELECT key FROM experiments WHERE tenant_id = :t AND status IN ('draft', 'running')
                AND arms @> CAST(:arm AS jsonb) ORDER BY key"""),
        {"t": tenant_id, "arm": json.dumps([{"name": f"visual@{model_key}"}])},
    ).all()
    if arms:
        raise DeploymentError(
            "in_use", f"model {model_key!r} is an arm of experiment(s) {', '.join(arms)}: stop them first"
        )
    if tenant.previous_model == model_key:
        tenant.previous_model = None
    now = datetime.now(UTC)
    # The lease stays: a runner in the middle of a page or an index build finds the status changed and stops
    # (its next write is refused), and the deletion is claimed only once that lease has run out.
    dep.status, dep.retired_at, dep.updated_at, dep.cursor = "retiring", now, now, 0
    session.flush()
    return dep


_DELETE_PAGE = text("""
    DELETE FROM items WHERE id IN (
        SELECT id FROM items WHERE tenant_id = :t AND model = :key ORDER BY id LIMIT :page)
""")


def retire_page(session: Session, dep: ModelDeployment, owner: str, *, page: int = 5000, lease_s: float = 60.0) -> int:
    """Delete a page of the retiring model's vectors (and codes) of the tenant, renewing the lease; rows deleted."""
    deleted = session.execute(_DELETE_PAGE, {"t": dep.tenant_id, "key": dep.model_key, "page": page}).rowcount
    renew_lease(session, dep, owner, status="retiring", lease_s=lease_s)
    return deleted


def model_in_use_elsewhere(session: Session, dep: ModelDeployment) -> bool:
    """Whether another tenant still has vectors of the model (its index is shared, by key: keep it then)."""
    return bool(
        session.scalar(
            text("SELECT EXISTS (SELECT 1 FROM items WHERE model = :key AND tenant_id <> :t)"),
            {"key": dep.model_key, "t": dep.tenant_id},
        )
    )


def forget(session: Session, dep: ModelDeployment, owner: str) -> bool:
    """The retired model's vectors and index are gone: delete its deployment row (False: the lease was lost)."""
    return bool(
        session.execute(
            delete(ModelDeployment).where(
                ModelDeployment.tenant_id == dep.tenant_id,
                ModelDeployment.model_key == dep.model_key,
                ModelDeployment.lease_owner == owner,
                ModelDeployment.status == "retiring",
            )
        ).rowcount
    )
