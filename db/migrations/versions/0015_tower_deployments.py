"""model_deployments: needs_images and items_failed (a fine-tuned tower is re-embedded from the images);
status `retiring` and retired_at (a retired model's vectors and index are deleted in the background)

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
    op.drop_constraint("ck_model_deployments_status", "model_deployments", type_="check")
    op.create_check_constraint(
        "ck_model_deployments_status", "model_deployments", "status IN ('embedding', 'ready', 'failed', 'retiring')"
    )
    op.add_column("model_deployments", sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "model_deployments", sa.Column("needs_images", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    op.add_column(
        "model_deployments", sa.Column("items_failed", sa.BigInteger(), nullable=False, server_default="0")
    )


def downgrade() -> None:
    op.execute("DELETE FROM model_deployments WHERE status = 'retiring'")
    op.drop_column("model_deployments", "retired_at")
    op.drop_constraint("ck_model_deployments_status", "model_deployments", type_="check")
    op.create_check_constraint(
        "ck_model_deployments_status", "model_deployments", "status IN ('embedding', 'ready', 'failed')"
    )
    op.drop_column("model_deployments", "items_failed")
    op.drop_column("model_deployments", "needs_images")
