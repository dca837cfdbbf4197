"""trained models: the per-tenant registry of training jobs and the models they produced

One row per training job: `training` while its process runs, then `ready` (with the content-addressed
model key, the artefact's path and its model card) or `failed` (with the reason, and no key or
path, so nothing is half-registered). `pid` and `host` name the training process, so a listing can
tell a crashed trainer from a running one (only on the host that started it: pids are per host).
At most one job per tenant trains at a time (a partial unique index), so two concurrent requests
cannot both start one. The same model key may appear twice (an identical artefact trained again);
lookups by key take the newest ready row.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "trained_models",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.String(length=64), nullable=False),
        sa.Column("method", sa.String(length=32), nullable=False),
        sa.Column("finetune", sa.Boolean(), nullable=False),
        sa.Column("params", JSONB(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("model_key", sa.String(length=128), nullable=True),
        sa.Column("artefact_path", sa.Text(), nullable=True),
        sa.Column("card", JSONB(), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.Column("log_path", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('training', 'ready', 'failed')", name="ck_trained_models_status"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id", name="uq_trained_models_job_id"),
    )
    op.create_index("ix_trained_models_tenant_created", "trained_models", ["tenant_id", "created_at"])
    op.create_index("ix_trained_models_tenant_key", "trained_models", ["tenant_id", "model_key"])
    op.create_index(
        "uq_trained_models_one_training",
        "trained_models",
        ["tenant_id"],
        unique=True,
        postgresql_where=sa.text("status = 'training'"),
    )


def downgrade() -> None:
    op.drop_table("trained_models")
