"""Learned codes move onto the rows of the vectors they code: `items.code`, no more `<key>+codes` items

A codes deployment stored each code as an item of its own (model `<key>+codes`, +-1 floats) beside the
item of the head's vector, so a codes query read two rows per candidate: the code item from the Hamming
index, then its product's vector through a B-tree to re-rank (docs/serving.md). The code now sits on the
vector's row, and the codes index is a partial index over those rows, like the binary kind's.

Upgrade adds the column, copies each code item's sign bits onto its source item (same tenant, image, kind,
box and label, model without the suffix), deletes the code items and drops the old codes indexes (their
name is the model's, their predicate the `+codes` key): the workers build the new ones for ready codes
deployments (`Reembedder.refresh_indexes`); until then a codes query is answered by a scan (slow, correct).
Downgrade writes the code items back from the column, drops the new indexes the same way, and the column.

Revision ID: 0017
Revises: 0016
"""
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

_DROP_CODES_INDEXES = """
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT indexname FROM pg_indexes
             WHERE schemaname = current_schema() AND tablename = 'items' AND indexname LIKE 'ix\\_items\\_ivf\\_codes\\_%'
    LOOP
        EXECUTE format('DROP INDEX IF EXISTS %I', r.indexname);
    END LOOP;
END $$
"""


def upgrade() -> None:
    op.execute("ALTER TABLE items ADD COLUMN code bit varying")
    op.execute(_DROP_CODES_INDEXES)
    op.execute("""
        UPDATE items i SET code = binary_quantize(c.embedding)::varbit
        FROM items c
        WHERE c.model LIKE '%+codes' AND i.model = left(c.model, -length('+codes'))
          AND i.tenant_id = c.tenant_id AND i.image_id = c.image_id AND i.kind = c.kind AND i.box = c.box
          AND i.label = c.label
    """)
    op.execute("DELETE FROM items WHERE model LIKE '%+codes'")


def downgrade() -> None:
    op.execute(_DROP_CODES_INDEXES)
    op.execute("""
        INSERT INTO items (tenant_id, product_id, image_id, kind, box, label, score, model, dim, embedding, in_stock,
                           category, created_at)
        SELECT i.tenant_id, i.product_id, i.image_id, i.kind, i.box, i.label, i.score, i.model || '+codes',
               bit_length(i.code),
               (SELECT array_agg(CASE WHEN substring(i.code FROM g FOR 1) = B'1' THEN 1 ELSE -1 END ORDER BY g)
                FROM generate_series(1, bit_length(i.code)) g)::real[]::vector,
               i.in_stock, i.category, i.created_at
        FROM items i WHERE i.code IS NOT NULL
    """)
    op.execute("ALTER TABLE items DROP COLUMN code")
