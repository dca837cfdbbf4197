"""receipt acknowledgements: a claimed event id counts as a duplicate only once Kafka acknowledged it

`received_at` becomes `claimed_at` (when an API request claimed the id, renewed when a retry
re-claims it) and `acked_at` is set after Kafka's acknowledgement. A claim never acknowledged and
older than VITRINE_RECEIPT_LEASE_S (the API died in between) is re-claimable, so the retailer's
retry is accepted instead of being answered `duplicates`. Rows written before this revision were
kept only after an acknowledgement (failures were deleted), so they count as acknowledged.

Revision ID: 0007
Revises: 0006
"""
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.alter_column("event_receipts", "received_at", new_column_name="claimed_at")
    op.add_column("event_receipts", sa.Column("acked_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE event_receipts SET acked_at = claimed_at")


def downgrade() -> None:
    # The old schema cannot say "claimed, not acknowledged": forget those claims, so retries are accepted.
    op.execute("DELETE FROM event_receipts WHERE acked_at IS NULL")
    op.drop_column("event_receipts", "acked_at")
    op.alter_column("event_receipts", "claimed_at", new_column_name="received_at")
