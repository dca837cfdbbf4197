"""model deployments: a tenant's trained models re-embedded in the background, the active one, rollback

`model_deployments` has one row per (tenant, model): `embedding` while the catalog is re-embedded page by
page (the committed `cursor` is the last source item done, so a crash resumes without writing anything
twice), then `ready` once its vectors and its index are complete, or `failed` with the reason. Only a
`ready` model serves. `tenants.active_model` is the model the plain `visual` arm serves (null: the
deployed embedder) and `tenants.previous_model` the one a rollback returns to.

`ix_items_image_model` serves the re-embed's "already has a vector of this model" check and the ingest's
per-image deletes, which scanned the table before.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_deployments",
        sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("model_key", sa.String(128), primary_key=True),
        sa.Column("source_key", sa.String(128), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("bits", sa.Integer()),
        sa.Column("artefact_path", sa.Text(), nullable=False),
        sa.Column("index_kind", sa.String(16), nullable=False, server_default="halfvec"),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("phase", sa.String(16), nullable=False, server_default="scan"),
        sa.Column("reason", sa.Text()),
        sa.Column("cursor", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("items_done", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("items_written", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("items_total", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("lease_owner", sa.Text()),
        sa.Column("lease_until", sa.DateTime(timezone=True)),
        sa.Column("scan_done_at", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("ready_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint("status IN ('embedding', 'ready', 'failed')", name="ck_model_deployments_status"),
        sa.CheckConstraint("phase IN ('scan', 'sweep', 'index', 'done')", name="ck_model_deployments_phase"),
    )
    op.create_index(
        "ix_model_deployments_embedding", "model_deployments", ["created_at"], postgresql_where="status = 'embedding'"
    )
    op.add_column("tenants", sa.Column("active_model", sa.String(128)))
    op.add_column("tenants", sa.Column("previous_model", sa.String(128)))
    op.create_index("ix_items_image_model", "items", ["image_id", "model"])


def downgrade() -> None:
    op.drop_index("ix_items_image_model", table_name="items")
    op.drop_column("tenants", "previous_model")
    op.drop_column("tenants", "active_model")
    op.drop_table("model_deployments")
