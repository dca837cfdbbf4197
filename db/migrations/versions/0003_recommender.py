"""recommender: item filter columns for in-scan kNN filtering, product popularity

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("items", sa.Column("in_stock", sa.Boolean(), server_default="true", nullable=False))
    op.add_column("items", sa.Column("category", sa.Text(), nullable=True))
    op.execute("UPDATE items i SET in_stock = p.in_stock, category = p.category FROM products p WHERE p.id = i.product_id")
    op.create_index("ix_items_tenant_model_category", "items", ["tenant_id", "model", "category"])
    op.create_table(
        "product_popularity",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("product_id", sa.String(length=255), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("tenant_id", "product_id"),
    )


def downgrade() -> None:
    op.drop_table("product_popularity")
    op.drop_index("ix_items_tenant_model_category", table_name="items")
    op.drop_column("items", "category")
    op.drop_column("items", "in_stock")
