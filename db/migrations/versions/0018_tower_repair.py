"""model_deployments: repair_from and phase `repair` (a ready tower's vectors that ingest could not write)

When a deployed tower cannot embed a crop at ingest, the product is indexed without that vector. Before, a
ready model kept such gaps for good. Ingest now records the point after which they lie (`repair_from`: the
item id sequence's value when the tower failed; the items written after it have larger ids), and a worker's
re-embed runner claims a ready tower with a mark and writes what is missing from the images, in phase
`repair` (the model keeps serving meanwhile).

Revision ID: 0018
Revises: 0017
"""
import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("model_deployments", sa.Column("repair_from", sa.BigInteger(), nullable=True))
    op.drop_constraint("ck_model_deployments_phase", "model_deployments", type_="check")
    op.create_check_constraint(
        "ck_model_deployments_phase", "model_deployments", "phase IN ('scan', 'sweep', 'index', 'done', 'repair')"
    )


def downgrade() -> None:
    op.execute("UPDATE model_deployments SET phase = 'done' WHERE phase = 'repair'")
    op.drop_constraint("ck_model_deployments_phase", "model_deployments", type_="check")
    op.create_check_constraint(
        "ck_model_deployments_phase", "model_deployments", "phase IN ('scan', 'sweep', 'index', 'done')"
    )
    op.drop_column("model_deployments", "repair_from")
