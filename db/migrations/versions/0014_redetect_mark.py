"""product_images.redetect_for: an indexed image waiting to be detected again (its status stays ok)

Revision ID: 0014
Revises: 0013
"""
import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("product_images", sa.Column("redetect_for", sa.String(128), nullable=True))
    op.create_index(
        "ix_product_images_redetect",
        "product_images",
        ["updated_at"],
        postgresql_where=sa.text("redetect_for IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_product_images_redetect", table_name="product_images")
    op.drop_column("product_images", "redetect_for")
