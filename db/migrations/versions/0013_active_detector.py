"""tenants.active_detector / previous_detector: the student detector a tenant's search and ingest use

Revision ID: 0013
Revises: 0012
"""
import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tenants", sa.Column("active_detector", sa.String(128), nullable=True))
    op.add_column("tenants", sa.Column("previous_detector", sa.String(128), nullable=True))


def downgrade() -> None:
    op.drop_column("tenants", "previous_detector")
    op.drop_column("tenants", "active_detector")
