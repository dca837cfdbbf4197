"""The binary and codes index kinds become Hamming IVFFlat indexes (db/vector_index.py): drop their HNSW ones

Their new names (ix_items_ivf_bin_*, ix_items_ivf_codes_*) differ, so nothing else could remove the old graphs;
the workers build the IVFFlat indexes of ready deployments (`Reembedder.refresh_indexes`), and until then a query
of those kinds is answered by a scan (slow, correct). Downgrade drops the IVFFlat ones the same way; the older
code then rebuilds only the deployed embedder's binary index (at worker start) and the indexes of deployments
made after the downgrade: ready binary/codes deployments stay without an index (each query a scan) until
redeployed, or until their HNSW index is created by hand (`ensure_vector_index` of that older code).

Revision ID: 0016
Revises: 0015
"""
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_DROP = """
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT indexname FROM pg_indexes
             WHERE schemaname = current_schema() AND tablename = 'items' AND ({where})
    LOOP
        EXECUTE format('DROP INDEX IF EXISTS %I', r.indexname);
    END LOOP;
END $$
"""


def upgrade() -> None:
    op.execute(_DROP.format(where="indexname LIKE 'ix\\_items\\_hnsw\\_bin\\_%' OR indexname LIKE 'ix\\_items\\_hnsw\\_codes\\_%'"))


def downgrade() -> None:
    op.execute(_DROP.format(where="indexname LIKE 'ix\\_items\\_ivf\\_%'"))
