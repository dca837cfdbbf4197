"""model_deployments.needs_images and items_failed: a fine-tuned tower is re-embedded from the images

Revision ID: 0015
Revises: 0014
"""
import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "model_deployments", sa.Column("needs_images", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    op.add_column(
        "model_deployments", sa.Column("items_failed", sa.BigInteger(), nullable=False, server_default="0")
    )


def downgrade() -> None:
    op.drop_column("model_deployments", "items_failed")
    op.drop_column("model_deployments", "needs_images")
