"""product_images.fetched_at: when an image was last downloaded (unchanged URLs are not re-fetched)

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("product_images", sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE product_images SET fetched_at = updated_at WHERE status = 'ok'")


def downgrade() -> None:
    op.drop_column("product_images", "fetched_at")
