"""Student detectors in the model registry: a tenant's catalog photos to teach them from, and which one is active.

Detectors are rows of `trained_models` with method `detector` (the same job life cycle as embedders:
`training` -> `ready` | `failed`). A tenant's active detector (migration 0013) is what search by image
and the worker use; activating keeps the previous one as the rollback target, and marks the tenant's
images for re-detection (`product_images.redetect_for`, migration 0014): their status stays `ok` and
their items keep serving until the worker's re-detect sweep fetches them again, detects with the active
detector and replaces their items in one transaction (db/catalog.store_redetected_images). Every query
is filtered by tenant.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from db.models import Product, ProductImage, Tenant, TrainedModel

DETECTOR_METHOD = "detector"
# Attributes that name the item a product is a variant of (Google Merchant feeds' item_group_id; the demo
# catalog's design, one drawing sold in two colourways): variants are one product for the held-out split,
# so a recoloured training product is never a "product the student never saw".
VARIANT_GROUP_ATTRIBUTES = ("item_group_id", "design")


class DetectorError(ValueError):
    """A detector request the registry refuses; `code` is machine-readable, the message says why."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class CatalogPhoto:
    """The stored thumbnail of one image of a live product (what a teacher cuts out or labels)."""

    product: str  # the product as the held-out split groups it: a VARIANT_GROUP_ATTRIBUTES value, else its id
    category: str | None
    image_id: int
    thumbnail: bytes


def catalog_photos(
    session: Session,
    tenant_id: str,
    *,
    categories: list[str] | None = None,
    exclude: list[str] | None = None,
    limit: int = 5000,
) -> list[CatalogPhoto]:
    """Thumbnails of the tenant's live products, in `categories` (None: any) and not in `exclude`, by product.

    A photo's `product` is its product's variant group when the product names one (VARIANT_GROUP_ATTRIBUTES)."""
    groups = [func.nullif(Product.attributes[key].astext, "") for key in VARIANT_GROUP_ATTRIBUTES]
    stmt = (
        select(func.coalesce(*groups, Product.external_id), Product.category, ProductImage.id, ProductImage.thumbnail)
        .join(ProductImage, ProductImage.product_id == Product.id)
        .where(
            Product.tenant_id == tenant_id,
            ProductImage.tenant_id == tenant_id,
            Product.deleted.is_(False),
            ProductImage.thumbnail.is_not(None),
        )
        .order_by(Product.external_id, ProductImage.position, ProductImage.id)
        .limit(limit)
    )
    if categories is not None:
        stmt = stmt.where(Product.category.in_(categories))
    if exclude:
        stmt = stmt.where(Product.category.is_not(None), Product.category.not_in(exclude))
    return [CatalogPhoto(p, c, i, bytes(t)) for p, c, i, t in session.execute(stmt).all()]


def category_counts(session: Session, tenant_id: str) -> dict[str | None, int]:
    """Live products with at least one thumbnail, per category."""
    from sqlalchemy import func

    rows = session.execute(
        select(Product.category, func.count(func.distinct(Product.id)))
        .join(ProductImage, ProductImage.product_id == Product.id)
        .where(Product.tenant_id == tenant_id, Product.deleted.is_(False), ProductImage.thumbnail.is_not(None))
        .group_by(Product.category)
    ).all()
    return dict(rows)


def list_detectors(session: Session, tenant_id: str | None) -> list[TrainedModel]:
    """The tenant's detector jobs and models, newest first (None: every tenant's, for the operator CLI)."""
    stmt = select(TrainedModel).where(TrainedModel.method == DETECTOR_METHOD)
    if tenant_id is not None:
        stmt = stmt.where(TrainedModel.tenant_id == tenant_id)
    return list(session.scalars(stmt.order_by(TrainedModel.created_at.desc(), TrainedModel.id.desc())))


def ready_detector(session: Session, tenant_id: str, key: str) -> TrainedModel:
    """The tenant's ready detector with this key or job id; DetectorError (unknown, not ready, not a detector)."""
    job = session.scalar(
        select(TrainedModel)
        .where(
            TrainedModel.tenant_id == tenant_id,
            (TrainedModel.model_key == key) | (TrainedModel.job_id == key),
        )
        .order_by(TrainedModel.created_at.desc(), TrainedModel.id.desc())
        .limit(1)
    )
    if job is None:
        raise DetectorError("unknown_detector", f"no detector {key!r} for tenant {tenant_id!r}")
    if job.method != DETECTOR_METHOD:
        raise DetectorError("not_a_detector", f"{key!r} is an embedding model ({job.method}), not a detector")
    if job.status != "ready":
        why = "is still training" if job.status == "training" else f"failed: {job.reason}"
        raise DetectorError("not_ready", f"detector {key!r} {why}; only a ready detector can be activated")
    return job


def activate_detector(session: Session, tenant_id: str, key: str) -> Tenant:
    """Make a ready detector the tenant's active one; the active one becomes the rollback target."""
    tenant = session.get(Tenant, tenant_id, with_for_update=True)
    if tenant is None:
        raise DetectorError("unknown_tenant", f"no tenant {tenant_id!r}")
    job = ready_detector(session, tenant_id, key)
    if tenant.active_detector != job.model_key:
        tenant.previous_detector, tenant.active_detector = tenant.active_detector, job.model_key
        session.flush()
        mark_for_redetect(session, tenant_id, job.model_key)
    return tenant


def rollback_detector(session: Session, tenant_id: str) -> Tenant:
    """Point the tenant back at its previous detector (none: the configured VITRINE_DETECTOR)."""
    tenant = session.get(Tenant, tenant_id, with_for_update=True)
    if tenant is None:
        raise DetectorError("unknown_tenant", f"no tenant {tenant_id!r}")
    if tenant.active_detector is None:
        raise DetectorError("no_active", f"tenant {tenant_id!r} has no active detector to roll back from")
    if tenant.previous_detector is not None:
        ready_detector(session, tenant_id, tenant.previous_detector)
    tenant.previous_detector, tenant.active_detector = tenant.active_detector, tenant.previous_detector
    session.flush()
    mark_for_redetect(session, tenant_id, tenant.active_detector or "the configured detector")
    return tenant


def mark_for_redetect(session: Session, tenant_id: str, detector: str) -> int:
    """Mark the tenant's indexed images of live products for the worker to detect again; returns how many.

    Their status stays `ok` and their items keep serving until the worker replaces them
    (db/catalog.claim_redetect_images / store_redetected_images).
    """
    return session.execute(
        text("""
        UPDATE product_images pi SET redetect_for = :mark
        FROM products p
        WHERE p.id = pi.product_id AND pi.tenant_id = :t AND p.tenant_id = :t AND NOT p.deleted AND pi.status = 'ok'
    """),
        {"t": tenant_id, "mark": detector[:128]},
    ).rowcount


def redetect_pending(session: Session, tenant_id: str) -> int:
    """The tenant's images still waiting for their re-detection."""
    return session.scalar(
        text("SELECT count(*) FROM product_images WHERE tenant_id = :t AND redetect_for IS NOT NULL"),
        {"t": tenant_id},
    )


def active_detector(session: Session, tenant_id: str) -> tuple[str, str] | None:
    """(model key, artefact path) of the tenant's active detector, or None for the configured default."""
    row = session.execute(
        select(TrainedModel.model_key, TrainedModel.artefact_path)
        .join(Tenant, Tenant.active_detector == TrainedModel.model_key)
        .where(
            Tenant.id == tenant_id,
            TrainedModel.tenant_id == tenant_id,
            TrainedModel.method == DETECTOR_METHOD,
            TrainedModel.status == "ready",
        )
        .order_by(TrainedModel.finished_at.desc())
        .limit(1)
    ).first()
    return (row[0], row[1]) if row else None
