"""Per-tenant catalog counts for `vitrine status` and the pipeline dashboard: products, images by status, items.

Reads only; an unreachable Postgres surfaces as sqlalchemy's OperationalError, for the caller to word.
"""

from __future__ import annotations

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from db.catalog import catalog_counts
from db.deployments import list_deployments, progress
from db.models import Tenant


class UnknownTenant(LookupError):
    """The tenant asked for does not exist."""

    def __init__(self, tenant_id: str):
        super().__init__(f"unknown tenant {tenant_id!r}")
        self.tenant_id = tenant_id


def catalog_status(session: Session, only_tenant: str | None = None) -> list[dict]:
    """Per tenant (all, or `only_tenant`), sorted by id: catalog counts, pending images, top failure reasons,
    the active model and each model deployment with its re-embed progress."""
    q = select(Tenant.id, Tenant.active_model).order_by(Tenant.id)
    tenants = session.execute(q.where(Tenant.id == only_tenant) if only_tenant else q).all()
    if only_tenant and not tenants:
        raise UnknownTenant(only_tenant)
    out = []
    for tid, active in tenants:
        row = {"tenant_id": tid, **catalog_counts(session, tid), "active_model": active}
        row["deployments"] = [
            {
                "model_key": d.model_key,
                "status": d.status,
                "phase": d.phase,
                "progress": progress(d),
                "items_done": d.items_done,
                "items_total": d.items_total,
                "items_failed": d.items_failed,
                "repairing": d.status == "ready" and (d.phase == "repair" or d.repair_from is not None),
                "from_images": d.needs_images,
                "index_kind": d.index_kind,
                "reason": d.reason,
            }
            for d in list_deployments(session, tid)
        ]
        row["images_pending"] = session.scalar(
            text("SELECT count(*) FROM product_images WHERE tenant_id = :t AND status = 'pending'"), {"t": tid}
        )
        row["failure_reasons"] = [
            {"reason": r.reason or "(none)", "count": r.n}
            for r in session.execute(
                text(
                    "SELECT failure_reason AS reason, count(*) AS n FROM product_images "
                    "WHERE tenant_id = :t AND status = 'failed' GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 3"
                ),
                {"t": tid},
            )
        ]
        out.append(row)
    return out
