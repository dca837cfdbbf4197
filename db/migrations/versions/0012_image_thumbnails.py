"""product_images.thumbnail: a small WebP of the image, stored at ingest so dashboards never fetch tenant URLs

Revision ID: 0012
Revises: 0011
"""
import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("product_images", sa.Column("thumbnail", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    op.drop_column("product_images", "thumbnail")
