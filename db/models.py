"""SQLAlchemy 2 table models. API schemas live in recommender/schemas.py, not here."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, BIT, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


def _now() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class Tenant(Base):
    """A retailer. Keys are stored as SHA-256 digests; the webhook secret must stay readable for HMAC."""

    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # slug, e.g. "acme"
    name: Mapped[str] = mapped_column(Text, nullable=False)
    storefront_key_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    admin_key_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    webhook_secret: Mapped[str] = mapped_column(Text, nullable=False)
    # Rotation: the previous secret keeps working until this time.
    webhook_secret_previous: Mapped[str | None] = mapped_column(Text)
    webhook_secret_previous_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    default_arm: Mapped[str] = mapped_column(String(32), nullable=False, default="baseline")
    # Browser origins allowed to read the storefront API's answers with this tenant's key (migration 0010).
    cors_origins: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False, default=list, server_default="{}")
    # The model the plain `visual` arm serves (null: the deployed embedder) and the one a rollback returns to
    # (migration 0011; only a model whose deployment is `ready` can become active, see db/deployments.py).
    active_model: Mapped[str | None] = mapped_column(String(128))
    previous_model: Mapped[str | None] = mapped_column(String(128))
    # The student detector (a `detector` row of trained_models) that search by image and ingest use for this
    # tenant, and the one a rollback returns to (migration 0013; null: the configured VITRINE_DETECTOR).
    active_detector: Mapped[str | None] = mapped_column(String(128))
    previous_detector: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = _now()


class Product(Base):
    """The latest known version of one product of one tenant (soft-deleted on product.deleted)."""

    __tablename__ = "products"
    __table_args__ = (
        UniqueConstraint("tenant_id", "external_id", name="uq_products_tenant_external"),
        Index("ix_products_tenant_category", "tenant_id", "category"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False)
    external_id: Mapped[str] = mapped_column(String(255), nullable=False)
    version: Mapped[int] = mapped_column(BigInteger, nullable=False)
    title: Mapped[str] = mapped_column(Text, nullable=False, default="")
    category: Mapped[str | None] = mapped_column(Text)
    price: Mapped[Decimal | None] = mapped_column(Numeric(12, 2))
    currency: Mapped[str | None] = mapped_column(String(3))
    in_stock: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    attributes: Mapped[dict] = mapped_column(JSONB, nullable=False, default=dict)
    deleted: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    last_event_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()
    indexed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    images: Mapped[list[ProductImage]] = relationship(
        back_populates="product", cascade="all, delete-orphan", order_by="ProductImage.position"
    )


class ProductImage(Base):
    """One image URL of a product, with the outcome of fetching and processing it."""

    __tablename__ = "product_images"
    __table_args__ = (
        UniqueConstraint("product_id", "url", name="uq_product_images_product_url"),
        Index("ix_product_images_redetect", "updated_at", postgresql_where=text("redetect_for IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id", ondelete="CASCADE"), nullable=False)
    url: Mapped[str] = mapped_column(Text, nullable=False)
    position: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    content_hash: Mapped[str | None] = mapped_column(String(64))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")  # pending|ok|failed
    failure_reason: Mapped[str | None] = mapped_column(Text)
    fetched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # last download
    # A small WebP (longest side THUMBNAIL_SIDE, vision/image.py) written at ingest (migration 0012):
    # dashboards show it and never fetch the tenant's URL. deferred: listing images never loads it.
    thumbnail: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    # Set when the tenant's detector changed: the worker detects this image again (db/detectors.py, migration 0014);
    # its status stays `ok` and its items serve until the new ones replace them.
    redetect_for: Mapped[str | None] = mapped_column(String(128))
    updated_at: Mapped[datetime] = _now()

    product: Mapped[Product] = relationship(back_populates="images")
    items: Mapped[list[Item]] = relationship(back_populates="image", cascade="all, delete-orphan")


class Item(Base):
    """One detected object (or the whole image) of one product image, with its embedding.

    `embedding` has no fixed dimension so several embedders can coexist during a re-embed;
    every HNSW index is a partial expression index for exactly one `model` (see db/vector_index.py),
    so vectors of different models never share an index.
    """

    __tablename__ = "items"
    __table_args__ = (
        Index("ix_items_tenant_model_product", "tenant_id", "model", "product_id"),
        Index("ix_items_tenant_model_category", "tenant_id", "model", "category"),
        Index("ix_items_image_model", "image_id", "model"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id", ondelete="CASCADE"), nullable=False)
    image_id: Mapped[int] = mapped_column(ForeignKey("product_images.id", ondelete="CASCADE"), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)  # whole | item | context
    box: Mapped[list[float]] = mapped_column(ARRAY(Float), nullable=False)  # x0, y0, x1, y1 (pixels)
    label: Mapped[str] = mapped_column(Text, nullable=False)
    score: Mapped[float] = mapped_column(Float, nullable=False)
    model: Mapped[str] = mapped_column(String(128), nullable=False)  # embedder name@version
    dim: Mapped[int] = mapped_column(Integer, nullable=False)
    # Copies of the product's state, so a kNN scan can filter inside the index scan (iterative
    # HNSW scans only see the scanned table's columns); kept in step by db/catalog.py.
    in_stock: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="true")
    category: Mapped[str | None] = mapped_column(Text)
    embedding = mapped_column(Vector(), nullable=False)
    # The learned binary code of a quantizing head (db/vector_index.py, the `codes` index kind), on the row
    # of the head's vector it came from; NULL for models without one.
    code = mapped_column(BIT(varying=True))
    created_at: Mapped[datetime] = _now()

    image: Mapped[ProductImage] = relationship(back_populates="items")


class Experiment(Base):
    """An A/B test of recommender arms on one placement of one tenant."""

    __tablename__ = "experiments"
    __table_args__ = (UniqueConstraint("tenant_id", "key", name="uq_experiments_tenant_key"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False)
    key: Mapped[str] = mapped_column(String(128), nullable=False)
    placement: Mapped[str] = mapped_column(String(64), nullable=False, default="similar")
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="draft")  # draft|running|stopped
    arms: Mapped[list] = mapped_column(JSONB, nullable=False)  # [{"name": "baseline", "weight": 0.5}, ...]
    traffic_fraction: Mapped[float] = mapped_column(Float, nullable=False, default=1.0)
    salt: Mapped[str] = mapped_column(String(64), nullable=False)
    hash_version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    primary_metric: Mapped[str] = mapped_column(String(32), nullable=False, default="ctr")
    guardrails: Mapped[list] = mapped_column(JSONB, nullable=False, default=list)
    planned_sample_size: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = _now()
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Assignment(Base):
    """The first arm a user got in an experiment; it wins even if weights change later (sticky)."""

    __tablename__ = "assignments"

    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False)
    arm: Mapped[str] = mapped_column(String(64), nullable=False)
    assigned_at: Mapped[datetime] = _now()


class InteractionEvent(Base):
    """An exposure, click, add_to_cart or purchase; `event_id` makes redelivery harmless."""

    __tablename__ = "interaction_events"
    __table_args__ = (
        UniqueConstraint("tenant_id", "event_id", name="uq_interaction_events_tenant_event"),
        Index("ix_interaction_events_experiment", "tenant_id", "experiment", "occurred_at"),
        Index("ix_interaction_events_request", "tenant_id", "request_id"),
        Index("ix_interaction_events_product", "tenant_id", "product_id", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False)
    event_id: Mapped[str] = mapped_column(String(255), nullable=False)
    type: Mapped[str] = mapped_column(String(16), nullable=False)  # exposure|click|add_to_cart|purchase
    user_id: Mapped[str] = mapped_column(String(255), nullable=False)
    request_id: Mapped[str | None] = mapped_column(String(64))
    product_id: Mapped[str | None] = mapped_column(String(255))  # the tenant's external product id
    experiment: Mapped[str | None] = mapped_column(String(128))  # experiment key, null = no experiment
    arm: Mapped[str | None] = mapped_column(String(64))
    value: Mapped[float | None] = mapped_column(Float)  # revenue for purchases
    payload: Mapped[dict] = mapped_column(JSONB, nullable=False, default=dict)  # e.g. products shown
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    received_at: Mapped[datetime] = _now()


class EventReceipt(Base):
    """A catalog event id claimed by an API request; once `acked_at` is set (Kafka acknowledged it)
    the same id again is answered as a duplicate, not re-sent. An unacknowledged claim older than
    the lease (VITRINE_RECEIPT_LEASE_S) is re-claimed by the next request (db/receipts.py)."""

    __tablename__ = "event_receipts"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    claimed_at: Mapped[datetime] = _now()
    acked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ProductPopularity(Base):
    """Time-decayed engagement per product (clicks, add-to-carts, purchases): the baseline arm's ranking.

    `score` is valid at `updated_at`; its value at time t is score * 2^(-(t - updated_at) / half_life).
    """

    __tablename__ = "product_popularity"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    product_id: Mapped[str] = mapped_column(String(255), primary_key=True)  # external id
    score: Mapped[float] = mapped_column(Float, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


# --- experiment rollup (migration 0005): kept current by triggers on interaction_events, never
# written by the application. The loader reads ExperimentUser (totals) and ExperimentUserDay
# (per-day series) instead of raw events when they answer exactly.


class ExperimentRequest(Base):
    """One (tenant, request, user) with an exposure or an outcome: the lock that serialises attribution."""

    __tablename__ = "experiment_requests"
    __table_args__ = (Index("ix_experiment_requests_mixed", "tenant_id", postgresql_where=text("mixed")),)

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    experiment: Mapped[str | None] = mapped_column(String(128))  # least experiment of its exposures
    exposures: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    mixed: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)  # exposures of 2+ experiments


class ExperimentPendingOutcome(Base):
    """Clicks and purchases of a request whose exposure has not arrived yet, per UTC day."""

    __tablename__ = "experiment_pending_outcomes"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    clicks: Mapped[int] = mapped_column(Integer, nullable=False)
    purchases: Mapped[int] = mapped_column(Integer, nullable=False)
    revenue: Mapped[Decimal] = mapped_column(Numeric, nullable=False)  # exact sums
    first_outcome_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class _UserSums:
    """Exposures and attributed outcomes of one user in one experiment (columns shared below)."""

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    experiment: Mapped[str] = mapped_column(String(128), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(255, collation="C"), primary_key=True)
    exposures: Mapped[int] = mapped_column(Integer, nullable=False)
    arm_lo: Mapped[str | None] = mapped_column(String(64, collation="C"))  # least / greatest arm (byte order)
    arm_hi: Mapped[str | None] = mapped_column(String(64, collation="C"))
    first_exposure_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_exposure_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    clicks: Mapped[int] = mapped_column(Integer, nullable=False)
    purchases: Mapped[int] = mapped_column(Integer, nullable=False)
    revenue: Mapped[Decimal] = mapped_column(Numeric, nullable=False)  # exact sums
    first_outcome_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ExperimentUserDay(_UserSums, Base):
    """Per experiment, user and UTC day: exposures and the clicks / purchases attributed by request id."""

    __tablename__ = "experiment_user_days"

    day: Mapped[date] = mapped_column(Date, primary_key=True, sort_order=1)  # UTC day; last key column


class ExperimentUser(_UserSums, Base):
    """Per experiment and user: the sums of their ExperimentUserDay rows (what the totals read)."""

    __tablename__ = "experiment_users"


class ExperimentSnapshot(Base):
    """The latest sufficient statistics of one experiment (default analysis, with the per-day series).

    Written by db/experiment_snapshots.py on a schedule; valid only for the definition it records.
    """

    __tablename__ = "experiment_snapshots"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    experiment: Mapped[str] = mapped_column(String(128), primary_key=True)
    format: Mapped[int] = mapped_column(Integer, nullable=False)  # of `stats`; another one is ignored
    computed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)  # data as of
    source: Mapped[str] = mapped_column(String(16), nullable=False)  # rollup | raw
    duration_ms: Mapped[int] = mapped_column(Integer, nullable=False)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # the definition's, when computed
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    arms: Mapped[list] = mapped_column(JSONB, nullable=False)
    stats: Mapped[dict] = mapped_column(JSONB, nullable=False)  # ExperimentStats, experiments/snapshots.py


class TrainedModel(Base):
    """One training job of a tenant and, once `ready`, the model it produced (migration 0008).

    `failed` rows keep the reason and never a key or path; `pid` and `host` name the training process
    so a listing on that host can mark a crashed trainer failed (db/trained_models.py).
    """

    __tablename__ = "trained_models"
    __table_args__ = (
        CheckConstraint("status IN ('training', 'ready', 'failed')", name="ck_trained_models_status"),
        Index("ix_trained_models_tenant_created", "tenant_id", "created_at"),
        Index("ix_trained_models_tenant_key", "tenant_id", "model_key"),
        # One job per tenant trains at a time: two concurrent starts cannot both get in.
        Index("uq_trained_models_one_training", "tenant_id", unique=True, postgresql_where=text("status = 'training'")),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False)
    job_id: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)  # uuid4 hex
    method: Mapped[str] = mapped_column(String(32), nullable=False)  # supervised|triplet|design|autoencoder
    finetune: Mapped[bool] = mapped_column(Boolean, nullable=False)
    params: Mapped[dict] = mapped_column(JSONB, nullable=False)  # the hyperparameters asked for
    status: Mapped[str] = mapped_column(String(16), nullable=False)  # training|ready|failed
    reason: Mapped[str | None] = mapped_column(Text)  # why it failed, one sentence
    model_key: Mapped[str | None] = mapped_column(String(128))  # content-addressed, e.g. supervised-head@3f2a9c1b7d10
    artefact_path: Mapped[str | None] = mapped_column(Text)
    card: Mapped[dict | None] = mapped_column(JSONB)  # the model card (vision/trained.py)
    pid: Mapped[int | None] = mapped_column(Integer)
    host: Mapped[str | None] = mapped_column(String(255))  # where `pid` runs
    log_path: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PreviousKey(Base):
    """A storefront or admin key replaced by a rotation: it keeps working until `expires_at` (migration 0009).

    Only the SHA-256 digest is kept, as for the current keys on `tenants`; a revocation deletes the rows.
    """

    __tablename__ = "previous_keys"
    __table_args__ = (
        CheckConstraint("kind IN ('storefront_key', 'admin_key')", name="ck_previous_keys_kind"),
        Index("ix_previous_keys_tenant_kind", "tenant_id", "kind"),
    )

    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)  # storefront_key | admin_key
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)


class CredentialAudit(Base):
    """One change of a tenant's key or webhook secret: who, what, when; never the secret (migration 0009).

    `fingerprint` is the first 12 hex digits of the new credential's SHA-256, enough to tell which one a
    retailer holds, far too little to recover it. No foreign key: the trail outlives what it describes.
    """

    __tablename__ = "credential_audit"
    __table_args__ = (
        CheckConstraint(
            "credential IN ('storefront_key', 'admin_key', 'webhook_secret')", name="ck_credential_audit_credential"
        ),
        CheckConstraint("action IN ('create', 'set', 'rotate', 'revoke')", name="ck_credential_audit_action"),
        Index("ix_credential_audit_tenant_at", "tenant_id", "at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), nullable=False)
    credential: Mapped[str] = mapped_column(String(16), nullable=False)
    action: Mapped[str] = mapped_column(String(16), nullable=False)
    actor: Mapped[str] = mapped_column(Text, nullable=False)  # e.g. cli:alice@host, api:admin-key:3f2a9c1b7d10
    fingerprint: Mapped[str | None] = mapped_column(String(12))  # of the credential in force after the change
    previous_valid_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # grace period end
    at: Mapped[datetime] = _now()


class ModelDeployment(Base):
    """A trained model being re-embedded for (then serving) one tenant (migration 0011, db/deployments.py).

    `embedding` -> `ready` (vectors and index complete: it may serve) or `failed` (the reason). While
    embedding, `phase` goes scan -> sweep -> index -> done; `cursor` is the last source item committed
    in the current pass, in the same transaction as the vectors it wrote, so a resumed run never writes
    a vector twice. `lease_owner` / `lease_until`: the process running it; an expired lease is taken over.
    `needs_images` (0015): a fine-tuned tower, re-embedded from the re-fetched images rather than from stored
    vectors; `items_failed` counts the items whose image could not be fetched or had changed (they stay without).
    `retiring` (0015, since `retired_at`): no longer served or written; its vectors and index are being deleted,
    then the row. `repair_from` (0018): a tower could not embed some crops at ingest; the items after this id
    may lack its vector. A `ready` tower with a mark goes through phase `repair` (still serving), then `done`.
    """

    __tablename__ = "model_deployments"
    __table_args__ = (
        CheckConstraint("status IN ('embedding', 'ready', 'failed', 'retiring')", name="ck_model_deployments_status"),
        CheckConstraint("phase IN ('scan', 'sweep', 'index', 'done', 'repair')", name="ck_model_deployments_phase"),
        Index("ix_model_deployments_embedding", "created_at", postgresql_where=text("status = 'embedding'")),
    )

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    model_key: Mapped[str] = mapped_column(String(128), primary_key=True)
    source_key: Mapped[str] = mapped_column(String(128), nullable=False)  # the backbone whose vectors it maps
    dim: Mapped[int] = mapped_column(Integer, nullable=False)
    bits: Mapped[int | None] = mapped_column(Integer)  # learned binary code length, if the head has a code layer
    artefact_path: Mapped[str] = mapped_column(Text, nullable=False)
    index_kind: Mapped[str] = mapped_column(String(16), nullable=False, server_default="halfvec")
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    phase: Mapped[str] = mapped_column(String(16), nullable=False, server_default="scan")
    reason: Mapped[str | None] = mapped_column(Text)
    cursor: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")
    items_done: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")  # source items read
    items_written: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")  # vectors written
    items_total: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")  # source items at start
    needs_images: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("false"))
    items_failed: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")  # towers: left without
    lease_owner: Mapped[str | None] = mapped_column(Text)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    scan_done_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()
    ready_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    repair_from: Mapped[int | None] = mapped_column(BigInteger)  # towers: items after it may lack a vector
