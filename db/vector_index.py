"""HNSW indexes per embedding model, of three kinds: partial expression indexes over `items.embedding`.

`items.embedding` is an untyped `vector` so a re-embed with a new model can run beside the old
one. pgvector indexes need a fixed dimension, so each model gets its own partial index restricted
to `model = '<name@version>'`. Queries must use the very same expression and predicate (see
db/vector_queries.py) or the planner cannot use the index. The kinds (docs/serving.md, "Index kinds"):

- `halfvec`: cosine HNSW on `embedding::halfvec(dim)`; halves the index size at equal recall.
- `binary`: Hamming HNSW on `binary_quantize(embedding::vector(dim))::bit(dim)`, one bit per
  dimension (its sign): 1/16 of halfvec's vector bytes. Queries re-rank the Hamming candidates on
  the full vectors. Only signed vectors quantize well (a trained head's output); pooled CNN
  features are almost all >= 0 and their signs say almost nothing.
- `codes`: the learned 32/48/64-bit codes of a quantizing head (vision/trained.py
  `TrainedEmbedder.codes`), stored as items of the model `codes_key(key)` (+-1 floats, one per
  item of `key`), with a Hamming HNSW over them; queries re-rank the candidate products on the
  full `key` vectors.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from db.catalog import vector_text

_MODEL_KEY = re.compile(r"^[A-Za-z0-9_.:@/+-]{1,128}$")
INDEX_KINDS = ("halfvec", "binary", "codes")
# HNSW build effort. pgvector's default, 64, left whole clusters of the 1M-product serve benchmark unreachable
# (recall@10 0.882 at ef_search 64, at most 0.921 up to 400, minimum 0.0 at every ef_search); 200 gave 0.998
# at ef_search 64 for a build roughly 1.6x as long (docs/serving.md, "Build effort at 1M").
EF_CONSTRUCTION = 200
CODES_SUFFIX = "+codes"
_PREFIX = {"halfvec": "ix_items_hnsw_", "binary": "ix_items_hnsw_bin_", "codes": "ix_items_hnsw_codes_"}
_MAX_DIM = {"halfvec": 4000, "binary": 64000, "codes": 64000}  # pgvector's HNSW limits per type


def check_kind(kind: str) -> str:
    """`kind` if it is one of INDEX_KINDS, else ValueError."""
    if kind not in INDEX_KINDS:
        raise ValueError(f"unknown index kind {kind!r}; choose one of {', '.join(INDEX_KINDS)}")
    return kind


def check_model_key(model_key: str) -> str:
    """`model_key` if it is safe to splice into SQL (it names partial indexes), else ValueError."""
    if not isinstance(model_key, str) or not _MODEL_KEY.match(model_key):
        raise ValueError(f"invalid model key {model_key!r}")
    return model_key


def codes_key(model_key: str) -> str:
    """The model key under which `model_key`'s learned binary codes are stored as items."""
    return check_model_key(check_model_key(model_key) + CODES_SUFFIX)


def index_name(model_key: str, kind: str = "halfvec") -> str:
    """The name of the model's index of that kind (halfvec keeps the name existing databases have)."""
    return _PREFIX[check_kind(kind)] + hashlib.sha1(model_key.encode()).hexdigest()[:12]


def vector_expr(dim: int, column: str = "embedding") -> str:
    """The halfvec index's expression; queries must order by exactly this."""
    return f"({column}::halfvec({int(dim)}))"


def bit_expr(dim: int, column: str = "embedding") -> str:
    """The binary and codes indexes' expression (sign bits); queries must order by exactly this."""
    return f"(binary_quantize({column}::vector({int(dim)}))::bit({int(dim)}))"


def ensure_vector_index(
    conn: Connection,
    model_key: str,
    dim: int,
    *,
    kind: str = "halfvec",
    concurrently: bool = False,
    m: int = 16,
    ef_construction: int = EF_CONSTRUCTION,
) -> str:
    """Create the model's HNSW index of `kind` if missing (idempotent); returns its name.

    `dim` is the dimension of the vectors the index covers: the model's for halfvec and binary,
    the code width in bits (the dimension of the `codes_key(model_key)` items) for codes.
    With `concurrently`, the build does not block writes (`CREATE INDEX CONCURRENTLY`): `conn`
    must then be in autocommit mode (SQLAlchemy: `engine.connect().execution_options(
    isolation_level="AUTOCOMMIT")`), as Postgres refuses it inside a transaction. An INVALID
    leftover of a build that crashed or was cancelled is dropped and built again.
    """
    check_kind(kind)
    check_model_key(model_key)
    if not 1 <= dim <= _MAX_DIM[kind]:
        raise ValueError(f"unsupported dimension {dim} for a {kind} index")
    name = index_name(model_key, kind)
    how = "CONCURRENTLY " if concurrently else ""
    if _validity(conn, name) is False:  # IF NOT EXISTS would keep the unusable leftover forever
        conn.execute(text(f"DROP INDEX {how}IF EXISTS {name}"))
    if kind == "halfvec":
        expr, ops, key = vector_expr(dim), "halfvec_cosine_ops", model_key
    else:
        expr, ops = bit_expr(dim), "bit_hamming_ops"
        key = codes_key(model_key) if kind == "codes" else model_key
    conn.execute(
        text(
            f"CREATE INDEX {how}IF NOT EXISTS {name} ON items USING hnsw ({expr} {ops}) "
            f"WITH (m = {int(m)}, ef_construction = {int(ef_construction)}) WHERE model = '{key}'"
        )
    )
    return name


def index_ready(conn: Connection, model_key: str, kind: str = "halfvec") -> bool:
    """True when the model's index of `kind` exists and is valid (a concurrent build has finished)."""
    return bool(_validity(conn, index_name(check_model_key(model_key), kind)))


def index_size_mb(conn: Connection, model_key: str, kind: str = "halfvec") -> float | None:
    """The index's size on disk in MB (None when it does not exist)."""
    size = conn.scalar(
        text("SELECT pg_relation_size(to_regclass(:n))"), {"n": index_name(check_model_key(model_key), kind)}
    )
    return None if size is None else round(size / 2**20, 2)


def drop_vector_index(conn: Connection, model_key: str, kind: str = "halfvec", *, concurrently: bool = False) -> None:
    """Drop the model's index of `kind` if it exists (`concurrently` needs an autocommit connection)."""
    how = "CONCURRENTLY " if concurrently else ""
    conn.execute(text(f"DROP INDEX {how}IF EXISTS {index_name(check_model_key(model_key), kind)}"))


def _validity(conn: Connection, name: str) -> bool | None:
    """pg_index.indisvalid of the index `name` in the search path; None when there is none."""
    return conn.scalar(text("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:n)"), {"n": name})


_WRITE_CODES = text("""
    INSERT INTO items (tenant_id, product_id, image_id, kind, box, label, score, model, dim, embedding, in_stock,
                       category)
    SELECT i.tenant_id, i.product_id, i.image_id, i.kind, i.box, i.label, i.score, :model, :dim, k.emb, i.in_stock,
           i.category
    FROM unnest(CAST(:ids AS bigint[]), CAST(:emb AS vector[])) AS k(id, emb)
    JOIN items i ON i.id = k.id AND i.tenant_id = :t AND i.model = :source
""")
_DELETE_CODES = text("""
    DELETE FROM items c USING items i
    WHERE i.id = ANY(CAST(:ids AS bigint[])) AND i.tenant_id = :t AND i.model = :source
      AND c.tenant_id = :t AND c.model = :model AND c.image_id = i.image_id AND c.kind = i.kind
      AND c.box = i.box AND c.label = i.label
""")


def code_vectors(codes: np.ndarray) -> np.ndarray:
    """Binary codes (0/1 or boolean, or already +-1) as +-1 float32 rows: their signs are the bits."""
    return np.where(np.asarray(codes) > 0, 1.0, -1.0).astype(np.float32)


def write_code_items(session: Session, tenant_id: str, model_key: str, item_ids: Sequence[int], codes) -> int:
    """Store the codes (n, bits) of the tenant's `model_key` items `item_ids` as `codes_key(model_key)` items.

    Each code item copies its source item's product, image, kind, box, label, score, stock and
    category; a code item already there for the same source item is replaced (idempotent, so a
    resumed re-embed never writes one twice). Never commits. Returns how many were written.
    """
    target = codes_key(model_key)
    vectors = code_vectors(codes)
    if vectors.ndim != 2 or len(vectors) != len(item_ids):
        raise ValueError(f"{len(item_ids)} item ids but codes of shape {vectors.shape}")
    if not len(item_ids):
        return 0
    bits = vectors.shape[1]
    if not 1 <= bits <= _MAX_DIM["codes"]:
        raise ValueError(f"unsupported code width {bits}")
    ids = [int(i) for i in item_ids]
    args = {"ids": ids, "t": tenant_id, "source": model_key, "model": target}
    session.execute(_DELETE_CODES, args)
    result = session.execute(_WRITE_CODES, {**args, "dim": bits, "emb": [vector_text(v) for v in vectors]})
    return result.rowcount
