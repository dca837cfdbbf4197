"""credential audit: who changed which tenant key or webhook secret, and when; previous keys in grace

`credential_audit` keeps one row per change (create, set, rotate, revoke) of a tenant's storefront
key, admin key or webhook secret: the actor, a 12-hex-digit fingerprint of the new credential and the
end of the grace period, never the credential itself. It has no foreign key, so the trail stays
when a tenant goes. `previous_keys` holds the digests of rotated storefront and admin keys until
their grace period ends (the webhook secret's previous value already has columns on `tenants`).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "credential_audit",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("credential", sa.String(length=16), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.String(length=12), nullable=True),
        sa.Column("previous_valid_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint(
            "credential IN ('storefront_key', 'admin_key', 'webhook_secret')", name="ck_credential_audit_credential"
        ),
        sa.CheckConstraint("action IN ('create', 'set', 'rotate', 'revoke')", name="ck_credential_audit_action"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_credential_audit_tenant_at", "credential_audit", ["tenant_id", "at"])
    op.create_table(
        "previous_keys",
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("kind IN ('storefront_key', 'admin_key')", name="ck_previous_keys_kind"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("key_hash"),
    )
    op.create_index("ix_previous_keys_tenant_kind", "previous_keys", ["tenant_id", "kind"])


def downgrade() -> None:
    op.drop_table("previous_keys")
    op.drop_table("credential_audit")
