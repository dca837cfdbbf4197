"""experiment snapshots: the latest sufficient statistics per experiment, computed on a schedule

One row per (tenant, experiment): the `ExperimentStats` (with the per-day series) of the default
analysis (request attribution, default pre-period), serialised as JSON by
experiments/snapshots.py, with when and how it was computed and the definition it was computed
for (a changed start, stop or arm list makes it invalid). Pages read it instead of aggregating
millions of events; the worker's timer and `vitrine experiment refresh` keep it current.

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "experiment_snapshots",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("experiment", sa.String(length=128), nullable=False),
        sa.Column("format", sa.Integer(), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("arms", JSONB(), nullable=False),
        sa.Column("stats", JSONB(), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("tenant_id", "experiment"),
    )


def downgrade() -> None:
    op.drop_table("experiment_snapshots")
