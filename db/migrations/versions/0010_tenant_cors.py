"""tenant CORS origins: the browser origins allowed to call the storefront API with a tenant's key

`tenants.cors_origins` lists origins such as `https://shop.example.com` (scheme, host, port; no path).
Empty (the default) = no browser origin may read the API's answers for this tenant; server-to-server
calls are unaffected (recommender/cors.py).

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "tenants",
        sa.Column("cors_origins", postgresql.ARRAY(sa.Text()), nullable=False, server_default="{}"),
    )


def downgrade() -> None:
    op.drop_column("tenants", "cors_origins")
