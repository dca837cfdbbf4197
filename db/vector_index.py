"""One HNSW index per embedding model: a partial expression index over `items.embedding`.

`items.embedding` is an untyped `vector` so a re-embed with a new model can run beside the old
one. pgvector indexes need a fixed dimension, so each model gets its own partial index on
`embedding::halfvec(dim)` restricted to `model = '<name@version>'`. Queries must use the very
same expression and predicate (see db/vector_queries.py) or the planner cannot use the index.
halfvec halves the index size at equal recall (docs/serving.md).
"""

from __future__ import annotations

import hashlib
import re

from sqlalchemy import text
from sqlalchemy.engine import Connection

_MODEL_KEY = re.compile(r"^[A-Za-z0-9_.:@/+-]{1,128}$")


def index_name(model_key: str) -> str:
    return "ix_items_hnsw_" + hashlib.sha1(model_key.encode()).hexdigest()[:12]


def vector_expr(dim: int, column: str = "embedding") -> str:
    """The indexed expression; queries must order by exactly this."""
    return f"({column}::halfvec({int(dim)}))"


def ensure_vector_index(conn: Connection, model_key: str, dim: int, *, m: int = 16, ef_construction: int = 64) -> str:
    """Create the model's HNSW index if missing (idempotent); returns its name."""
    if not _MODEL_KEY.match(model_key):  # it is spliced into DDL, so be strict
        raise ValueError(f"invalid model key for an index: {model_key!r}")
    if not 1 <= dim <= 4000:  # halfvec HNSW supports up to 4,000 dimensions
        raise ValueError(f"unsupported vector dimension {dim}")
    name = index_name(model_key)
    conn.execute(
        text(
            f"CREATE INDEX IF NOT EXISTS {name} ON items USING hnsw ({vector_expr(dim)} halfvec_cosine_ops) "
            f"WITH (m = {int(m)}, ef_construction = {int(ef_construction)}) WHERE model = '{model_key}'"
        )
    )
    return name
