"""Vector indexes per embedding model, of three kinds: partial expression indexes over `items.embedding`.

`items.embedding` is an untyped `vector` so a re-embed with a new model can run beside the old
one. pgvector indexes need a fixed dimension, so each model gets its own partial index restricted
to `model = '<name@version>'`. Queries must use the very same expression and predicate (see
db/vector_queries.py) or the planner cannot use the index. The kinds (docs/serving.md, "Index kinds"):

- `halfvec`: cosine HNSW on `embedding::halfvec(dim)`; halves the index size at equal recall.
- `binary`: Hamming IVFFlat on `binary_quantize(embedding::vector(dim))::bit(dim)`, one bit per
  dimension (its sign). Queries re-rank the Hamming candidates on the full vectors. Only signed
  vectors quantize well (a trained head's output); pooled CNN features are almost all >= 0 and
  their signs say almost nothing.
- `codes`: the learned 32/48/64-bit codes of a quantizing head (vision/trained.py
  `TrainedEmbedder.codes`), stored in `items.code` on the rows of the head's vectors, with a Hamming
  IVFFlat on `code::bit(bits)`; queries re-rank the candidates on the full vectors of the same rows.

Why IVFFlat for the bit kinds and not HNSW: an HNSW element carries its neighbour lists (2 x m heap
TIDs at level 0) whatever the vector type, so at 128 bits the graph, not the codes, is the index
(1.8x smaller than halfvec at 1M, 298 MB); an IVFFlat entry is the bit string and one TID (14x
smaller, 39 MB), it builds in seconds instead of minutes, and scanning a few lists of bit strings
returns the exact Hamming order within them, without the ties that stall a graph walk. Its lists
are k-means centres fixed at build time, sized from the rows then (`ivf_lists`: sqrt(rows), which at 100k
scanned a third of pgvector's rows / 1000 advice for the same recall); `refresh_ivf_index` rebuilds an index
whose catalog has outgrown them (the worker checks).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from db.catalog import code_texts

log = logging.getLogger(__name__)

_MODEL_KEY = re.compile(r"^[A-Za-z0-9_.:@/+-]{1,128}$")
INDEX_KINDS = ("halfvec", "binary", "codes")
# HNSW build effort. pgvector's default, 64, left whole clusters of the 1M-product serve benchmark unreachable
# (recall@10 0.882 at ef_search 64, at most 0.921 up to 400, minimum 0.0 at every ef_search); 200 gave 0.998
# at ef_search 64 for a build roughly 1.6x as long (docs/serving.md, "Build effort at 1M").
EF_CONSTRUCTION = 200
# The Hamming IVFFlat indexes of the bit kinds: lists probed per query (the iterative scan probes more when a
# filter leaves too few rows), and how far the lists wanted may outgrow those of the build before a rebuild
# (2x the lists: 4x the rows).
IVF_KINDS = ("binary", "codes")
IVF_PROBES = 10
IVF_REBUILD_GROWTH = 2
_PREFIX = {"halfvec": "ix_items_hnsw_", "binary": "ix_items_ivf_bin_", "codes": "ix_items_ivf_codes_"}
_MAX_DIM = {"halfvec": 4000, "binary": 64000, "codes": 64000}  # pgvector's index limits per type
_LISTS = re.compile(r"^lists=(\d+)$")


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


def index_name(model_key: str, kind: str = "halfvec") -> str:
    """The name of the model's index of that kind (halfvec keeps the name existing databases have)."""
    return _PREFIX[check_kind(kind)] + hashlib.sha1(model_key.encode()).hexdigest()[:12]


def vector_expr(dim: int, column: str = "embedding") -> str:
    """The halfvec index's expression; queries must order by exactly this."""
    return f"({column}::halfvec({int(dim)}))"


def bit_expr(dim: int, column: str = "embedding") -> str:
    """The binary index's expression (the vector's sign bits); queries must order by exactly this."""
    return f"(binary_quantize({column}::vector({int(dim)}))::bit({int(dim)}))"


def code_expr(bits: int, column: str = "code") -> str:
    """The codes index's expression (the stored code, as pgvector's fixed-width `bit`); queries order by it."""
    return f"({column}::bit({int(bits)}))"


def ivf_lists(rows: int, memory_bytes: int | None = None, dim: int = 128) -> int:
    """IVFFlat lists for `rows` bit strings of `dim` bits: sqrt(rows), >= 1, and no more than a build in
    `memory_bytes` of `maintenance_work_mem` can cluster.

    pgvector advises rows / 1000 up to 1M rows and sqrt(rows) above (the same 1,000 at 1M). For the
    Hamming indexes here, sqrt is better below 1M: at 100k, 316 lists probed 10 at a time gave the
    recall of 100 lists (0.984 binary) scanning a third of the entries, p50 2.6 instead of 3.9 ms
    (docs/serving.md, "Lists and candidates by catalog size"). A build's memory grows with the lists
    squared: pgvector's k-means keeps a samples x lists bound matrix, 50 samples a list, 4 bytes each
    (~200 MB at 1,000 lists; 3,162 lists wanted 1.9 GB), and refuses to build beyond
    `maintenance_work_mem`, so the lists are capped to fit 90 % of it (64 MB: 533 lists at 128 bits).
    """
    lists = max(1, math.isqrt(max(0, rows)))
    while memory_bytes is not None and lists > 1 and _build_bytes(lists, rows, dim) > 0.9 * memory_bytes:
        lists -= 1
    return lists


def _build_bytes(lists: int, rows: int, dim: int) -> int:
    """What pgvector's IVFFlat k-means asks of `maintenance_work_mem` for bit strings of `dim` bits (ivfkmeans.c,
    counted generously): the sample array (room for 50 rows a list, at least 10,000) and two centre arrays of
    bit strings, the centres' float sums, a samples x lists bound matrix, two lists x lists distance matrices
    and a few per-sample and per-list arrays."""
    room = max(10_000, 50 * lists)
    samples = min(rows, room)
    item = 8 * math.ceil((8 + math.ceil(dim / 8)) / 8)  # a varbit, MAXALIGNed
    floats = samples * lists + 2 * lists * lists + 2 * samples + 2 * lists  # 4 bytes each
    return (room + 2 * lists) * item + lists * (8 + 4 * dim) + 4 * floats


def set_build_memory(conn: Connection, memory: str, *, local: bool) -> None:
    """Set `maintenance_work_mem` (e.g. "512MB") for index builds on `conn`: for its transaction (`local`) or its
    session (reset it before the connection goes back to the pool)."""
    conn.execute(text("SELECT set_config('maintenance_work_mem', :m, :l)"), {"m": memory, "l": local})


def _build_memory(conn: Connection) -> int:
    """This connection's `maintenance_work_mem`, in bytes."""
    return int(conn.scalar(text("SELECT pg_size_bytes(current_setting('maintenance_work_mem'))")))


INDEX_LOCK_WAIT_S = 1800.0  # the longest a build or drop waits for a rebuild of the same index


@contextmanager
def _index_lock(conn: Connection, name: str, *, autocommit: bool) -> Iterator[bool]:
    """The advisory lock a rebuild of the index `name` holds (refresh_ivf_index); yields whether it is held.

    So a build or a drop does not land between a rebuild's drop of the old index and the rename of its
    replacement. On an autocommit connection: wait for it, polling with no transaction open (a blocking
    wait would hold a snapshot that the rebuild's CREATE INDEX CONCURRENTLY waits for: a deadlock), and
    release it after (the session lock is re-entrant: a refresh's own build takes it again). Inside a
    transaction, which may hold locks the rebuild waits for, only try: False when a rebuild is under way.
    """
    lock = {"n": name}
    if not autocommit:
        yield bool(conn.scalar(text("SELECT pg_try_advisory_xact_lock(hashtext(:n))"), lock))
        return
    deadline = time.monotonic() + INDEX_LOCK_WAIT_S
    while not conn.scalar(text("SELECT pg_try_advisory_lock(hashtext(:n))"), lock):
        if time.monotonic() > deadline:
            raise TimeoutError(f"a rebuild of {name} held its lock for over {INDEX_LOCK_WAIT_S:.0f} s")
        time.sleep(0.2)
    try:
        yield True
    finally:
        conn.execute(text("SELECT pg_advisory_unlock(hashtext(:n))"), lock)


def ensure_vector_index(
    conn: Connection,
    model_key: str,
    dim: int,
    *,
    kind: str = "halfvec",
    concurrently: bool = False,
    m: int = 16,
    ef_construction: int = EF_CONSTRUCTION,
    lists: int | None = None,
) -> str:
    """Create the model's index of `kind` if missing (idempotent); returns its name.

    `dim` is the dimension of what the index covers: the model's vectors for halfvec and binary,
    the code width in bits (of `items.code`) for codes.
    halfvec is an HNSW index (`m`, `ef_construction`); binary and codes are IVFFlat indexes with
    `lists` lists (default: `ivf_lists` of the rows they cover now).
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
    if _validity(conn, name):
        return name
    # IVFFlat indexes are rebuilt in place (refresh_ivf_index): wait for one under way, then look again.
    # Inside a transaction, a rebuild under way is left to finish: it leaves the index valid.
    lock = _index_lock(conn, name, autocommit=concurrently) if kind in IVF_KINDS else nullcontext(True)
    with lock as held:
        if not held:
            log.info("%s is being rebuilt: left to the rebuild", name)
            return name
        valid = _validity(conn, name)
        if valid:
            return name
        if valid is False:  # IF NOT EXISTS would keep the unusable leftover forever
            conn.execute(text(f"DROP INDEX {how}IF EXISTS {name}"))
        sql = _create_sql(conn, name, model_key, dim, kind, how=how, m=m, ef_construction=ef_construction, lists=lists)
        conn.execute(text(sql))
    return name


def _create_sql(conn, name, model_key, dim, kind, *, how, lists, m=16, ef_construction=EF_CONSTRUCTION) -> str:
    """The CREATE INDEX statement of the model's index of `kind` under `name`."""
    key = check_model_key(model_key)
    if kind == "halfvec":
        build = f"m = {int(m)}, ef_construction = {int(ef_construction)}"
        method = f"hnsw ({vector_expr(dim)} halfvec_cosine_ops) WITH ({build})"
    else:
        lists = ivf_lists(_covered_rows(conn, key), _build_memory(conn), dim) if lists is None else int(lists)
        expr = code_expr(dim) if kind == "codes" else bit_expr(dim)
        method = f"ivfflat ({expr} bit_hamming_ops) WITH (lists = {lists})"
    return f"CREATE INDEX {how}IF NOT EXISTS {name} ON items USING {method} WHERE model = '{key}'"


def index_lists(conn: Connection, model_key: str, kind: str) -> int | None:
    """The lists an IVFFlat index of the model was built with (None: no such index)."""
    options = conn.scalar(
        text("SELECT reloptions FROM pg_class WHERE oid = to_regclass(:n)"), {"n": index_name(model_key, kind)}
    )
    found = [int(x.group(1)) for x in map(_LISTS.match, options or []) if x]
    return found[0] if found else None


def refresh_ivf_index(conn: Connection, model_key: str, dim: int, kind: str) -> int | None:
    """Rebuild the model's IVFFlat index of `kind` if its rows have outgrown the lists of its build; the new lists.

    The lists are k-means centres of the rows at build time: an index built on a small or empty
    catalog keeps scanning few, ever longer lists. When `ivf_lists(rows)` reaches
    IVF_REBUILD_GROWTH x the built lists, a replacement is built concurrently under a second name,
    the old one dropped and the new one renamed (queries use either meanwhile). Builds a missing
    index. Returns the new lists, or None when nothing was done. `conn`: autocommit. Two callers
    at once: one builds, the other returns None (an advisory lock on the index name).
    """
    if check_kind(kind) not in IVF_KINDS:
        raise ValueError(f"{kind} indexes are HNSW: nothing to refresh")
    name = index_name(model_key, kind)
    spare = name + "_next"
    if not conn.scalar(text("SELECT pg_try_advisory_lock(hashtext(:n))"), {"n": name}):
        return None
    try:
        valid = _validity(conn, name)
        if valid is None and _validity(conn, spare):  # a crash between the drop and the rename below
            conn.execute(text(f"ALTER INDEX {spare} RENAME TO {name}"))
            valid = True
        conn.execute(text(f"DROP INDEX CONCURRENTLY IF EXISTS {spare}"))  # a build that crashed half-way
        rows = _covered_rows(conn, check_model_key(model_key), name if valid else None)
        wanted = ivf_lists(rows, _build_memory(conn), dim)
        if not valid:
            ensure_vector_index(conn, model_key, dim, kind=kind, concurrently=True, lists=wanted)
            return wanted
        if wanted < IVF_REBUILD_GROWTH * (index_lists(conn, model_key, kind) or 1):
            return None
        conn.execute(text(_create_sql(conn, spare, model_key, dim, kind, how="CONCURRENTLY ", lists=wanted)))
        conn.execute(text(f"DROP INDEX CONCURRENTLY IF EXISTS {name}"))
        conn.execute(text(f"ALTER INDEX {spare} RENAME TO {name}"))
        return wanted
    finally:
        conn.execute(text("SELECT pg_advisory_unlock(hashtext(:n))"), {"n": name})


@dataclass(frozen=True)
class IvfTuning:
    """The probes and re-rank factor chosen for one IVFFlat index on its own catalog (db/ivf_tuning.py), and what
    they were measured at: recall@10 against exact search over `sample` products, with the index's `entries` and
    `lists` then. Kept as the index's comment (COMMENT ON INDEX), so a rebuild, which makes a new index, starts
    untuned."""

    probes: int
    factor: int
    recall: float
    target: float
    sample: int
    entries: int
    lists: int
    met: bool = True  # False: no setting tried reached `target`; these recalled the most
    seconds: float | None = None  # how long the tuning took

    def comment(self) -> str:
        return json.dumps({"ivf_tuning": asdict(self)}, sort_keys=True)

    @classmethod
    def parse(cls, comment: str | None) -> IvfTuning | None:
        """The tuning a comment records; None for no comment or any other text."""
        try:
            tuning = cls(**json.loads(comment)["ivf_tuning"])
            usable = isinstance(tuning.probes, int) and isinstance(tuning.factor, int) and tuning.probes >= 1
            return tuning if usable and tuning.factor >= 1 else None
        except (TypeError, ValueError, KeyError):
            return None


def read_tuning(conn: Connection, model_key: str, kind: str) -> IvfTuning | None:
    """The tuning recorded on the model's valid index of `kind` (None: not tuned, or no such index)."""
    row = conn.execute(INDEX_STATE, {"n": index_name(check_model_key(model_key), kind)}).first()
    return IvfTuning.parse(row.comment) if row is not None else None


def write_tuning(conn: Connection, model_key: str, kind: str, tuning: IvfTuning, oid: int) -> bool:
    """Record `tuning` on the model's index of `kind` if it is still the index `oid` that was tuned (a rebuild
    under way or done since replaces it: nothing is written); whether it was written. `conn`: in a transaction."""
    name = index_name(check_model_key(model_key), kind)
    if not conn.scalar(text("SELECT pg_try_advisory_xact_lock(hashtext(:n))"), {"n": name}):
        return False  # refresh_ivf_index holds it for a whole rebuild
    if conn.scalar(text("SELECT to_regclass(:n)::oid"), {"n": name}) != oid:
        return False
    comment = tuning.comment().replace("'", "''")  # numbers and fixed keys only; quoted all the same
    conn.execute(text(f"COMMENT ON INDEX {name} IS '{comment}'"))
    return True


# A valid index's oid, its entries as Postgres last counted them (reltuples; -1: never counted) and its comment (an
# IVFFlat index's tuning, IvfTuning); no row: no such valid index
INDEX_STATE = text(
    "SELECT c.oid, c.reltuples, obj_description(c.oid, 'pg_class') AS comment FROM pg_class c "
    "JOIN pg_index i ON i.indexrelid = c.oid WHERE c.oid = to_regclass(:n) AND i.indisvalid"
)


def _covered_rows(conn: Connection, key: str, index: str | None = None) -> int:
    """Items of the model `key` (every tenant's: the partial index covers them all).

    With `index` (valid), its entries as Postgres last counted them (pg_class.reltuples: set by the build,
    kept current by autovacuum and ANALYZE), which is all a rebuild decision at IVF_REBUILD_GROWTH x needs;
    a count otherwise. The workers call this every 5 minutes per index: a count of a model's 1M rows took
    34-42 ms of both cores (a parallel scan), the catalog row under 1.5 ms.
    """
    if index is not None:
        row = conn.execute(INDEX_STATE, {"n": index}).first()
        if row is not None and row.reltuples >= 0:
            return int(row.reltuples)
    return int(conn.scalar(text("SELECT count(*) FROM items WHERE model = :m"), {"m": key}))


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
    """Drop the model's index of `kind` if it exists, with any replacement a rebuild left (`refresh_ivf_index`);
    `concurrently` needs an autocommit connection."""
    how = "CONCURRENTLY " if concurrently else ""
    name = index_name(check_model_key(model_key), kind)
    if kind not in IVF_KINDS:
        conn.execute(text(f"DROP INDEX {how}IF EXISTS {name}"))
        return
    # Not mid-rebuild: it would rename its replacement back. Inside a transaction (benchmarks) drop regardless.
    with _index_lock(conn, name, autocommit=concurrently):
        for each in (name, name + "_next"):
            conn.execute(text(f"DROP INDEX {how}IF EXISTS {each}"))


def _validity(conn: Connection, name: str) -> bool | None:
    """pg_index.indisvalid of the index `name` in the search path; None when there is none."""
    return conn.scalar(text("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:n)"), {"n": name})


_WRITE_CODES = text("""
    UPDATE items i SET code = CAST(k.code AS varbit)
    FROM unnest(CAST(:ids AS bigint[]), CAST(:codes AS text[])) AS k(id, code)
    WHERE i.id = k.id AND i.tenant_id = :t AND i.model = :model
""")


def write_codes(session: Session, tenant_id: str, model_key: str, item_ids: Sequence[int], codes) -> int:
    """Store the codes (n, bits) of the tenant's `model_key` items `item_ids` on those items (`items.code`),
    replacing any there (so a resumed re-embed may write them again). Never commits; rows written."""
    texts = code_texts(codes)
    if len(texts) != len(item_ids):
        raise ValueError(f"{len(item_ids)} item ids but {len(texts)} codes")
    if not texts:
        return 0
    if not 1 <= len(texts[0]) <= _MAX_DIM["codes"]:
        raise ValueError(f"unsupported code width {len(texts[0])}")
    args = {"ids": [int(i) for i in item_ids], "codes": texts, "t": tenant_id, "model": check_model_key(model_key)}
    return session.execute(_WRITE_CODES, args).rowcount
