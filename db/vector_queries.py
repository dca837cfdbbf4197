"""Vector search over items, aggregated to products (the visual arm's query).

Filters (tenant, in stock, category) are on `items` columns, so pgvector's iterative HNSW scan
applies them inside the index scan and keeps scanning until enough rows pass. Two exact paths
back it up: small filtered sets are searched exactly from the start (a B-tree pre-filter and a
sort is cheap there and gives recall 1.0), and an HNSW answer that comes back short is redone
exactly. The model key and dimension are spliced in as validated literals: the HNSW indexes
are partial (`WHERE model = '<key>'`), and a generic plan with `model = $1` could not use them.

The index kind (db/vector_index.py) only changes where the index's candidates come from: `halfvec`
ranks items by cosine in its HNSW index; `binary` takes the top `rerank_factor(...) x k` items by Hamming
distance of their sign bits (IVFFlat, IVF_PROBES lists) and re-ranks them on the full vectors;
`codes` does the same with the learned codes stored on the same rows (`items.code`). pgvector has
no asymmetric distance (a float query against stored bit codes), so both compare codes with codes
and let the re-rank restore the order. The exact strategy is the same for every kind: cosine on
the full vectors.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import lru_cache

from sqlalchemy import text
from sqlalchemy.orm import Session

from db.vector_index import (
    _MODEL_KEY,
    INDEX_STATE,
    IVF_KINDS,
    IVF_PROBES,
    IvfTuning,
    bit_expr,
    check_kind,
    code_expr,
    index_name,
    vector_expr,
)

EXACT_THRESHOLD = 2000  # filtered items at or below which an exact scan is both cheap and exact
# The bit kinds: up to this many filtered items Postgres itself prefers reading them all (a B-tree on the filter,
# then a sort by Hamming distance) to the IVF scan, and the Hamming order of a whole category re-ranks worse than
# the IVF lists' (100k, same category: 0.95 vs 0.98). Reading them all by cosine instead costs the same and is exact.
EXACT_THRESHOLD_BITS = 10_000
# ... and with a category filter, up to this many items in the category: at 316k products a category of ~19,750
# items through the IVF scan recalled 0.946 (binary) / 0.933 (codes), 25-30 ms a query; read exactly, 1.0 at ~38 ms
# (docs/serving.md, "Between the two sizes: 316k"). At 1M a category (~62,500) is over it and the scan recalls 0.99.
EXACT_THRESHOLD_BITS_FILTERED = 25_000
# Hamming candidates per query item, as a multiple of the k items the halfvec scan keeps. Without a filter it
# follows the entries of the kind's index (all tenants'): 128 sign bits or 64 learned bits order a large catalog's
# near neighbours coarsely, as more items crowd each Hamming distance. Measured for recall@10 >= 0.95 on the serve
# benchmark's catalog at two sizes (docs/serving.md, "Lists and candidates by catalog size"): at 100k the factor
# 4 recalls what 16 or 25 do (the probed lists, not the candidates, limit it), at 1M binary needs 16 (8: 0.92),
# codes 25 (16: 0.94-0.96). Between the two sizes the factor is interpolated geometrically in the entries; at or
# below the smaller the smaller factor, above the larger the larger one (nothing measured there: a catalog far
# above 1M may need more). A filtered query needs more: the IVF scan probes lists until enough candidates pass
# the filter, and an item whose category differs from its neighbourhood's finds its in-category neighbours only
# in lists farther away (100k, 16x: 0.895; 25x: 0.968).
RERANK_FACTOR = {"binary": ((100_000, 4), (1_000_000, 16)), "codes": ((100_000, 4), (1_000_000, 25))}
RERANK_FACTOR_FILTERED = {"binary": 25, "codes": 25}
MAX_CANDIDATES = 1000  # Hamming candidates per query item at most (a large limit would otherwise ask for more)
MAX_EF_SEARCH = 1000  # pgvector's limit for hnsw.ef_search


@dataclass(frozen=True)
class Neighbour:
    product_id: str  # the tenant's external id
    title: str
    category: str | None
    price: float | None
    image_url: str | None
    distance: float  # cosine distance of the best-matching item pair

    @property
    def score(self) -> float:
        """Cosine similarity, 1 = identical."""
        return 1.0 - self.distance


@dataclass(frozen=True)
class VisualResult:
    neighbours: list[Neighbour] | None  # None: the product has no vectors (yet)
    # "hnsw" (the kind's index answered: HNSW for halfvec, IVFFlat for the bit kinds), "exact", "hnsw+exact"
    # (the index came back short)
    strategy: str


def _sql(
    model_key: str,
    dim: int,
    *,
    exact: bool,
    category: bool,
    by_vector: bool = False,
    kind: str = "halfvec",
    bits: int | None = None,
    k: int | None = None,
    kc: int | None = None,
) -> str:
    """The kNN query; the query vectors are the product's items, or one vector (:qvec) for search.

    `k` / `kc` given: the index query's LIMITs as literals (see `_limits`), else the parameters :k / :kc.
    """
    lim_k, lim_kc = _limits(k, kc)
    if not exact and kind == "binary":
        return _binary_sql(model_key, dim, category=category, by_vector=by_vector, limits=(lim_k, lim_kc))
    if not exact and kind == "codes":
        return _codes_sql(model_key, dim, bits, category=category, limits=(lim_k, lim_kc))
    expr_i, expr_q = vector_expr(dim, "i.embedding"), vector_expr(dim, "q.embedding")
    # "+ 0" makes the sort key an expression no index matches: the planner must sort exactly.
    order = f"({expr_i} <=> {expr_q}) + 0" if exact else f"{expr_i} <=> {expr_q}"
    query, exclude = _source(model_key, by_vector)
    return f"""
        WITH {query}, cand AS (
            SELECT c.product_id, min(c.dist) AS dist
            FROM q CROSS JOIN LATERAL (
                SELECT i.product_id, {expr_i} <=> {expr_q} AS dist
                FROM items i
                WHERE i.model = '{model_key}' AND i.tenant_id = :tenant AND i.in_stock
                  {exclude} {"AND i.category = :category" if category else ""}
                ORDER BY {order}
                LIMIT {lim_k}
            ) c
            GROUP BY c.product_id
        )
        {_PRODUCTS}
    """


def _limits(k: int | None, kc: int | None) -> tuple[str, str]:
    """The kNN's LIMIT clauses' values: literals where given, else the parameters :k and :kc.

    With literal LIMITs Postgres can keep one plan per statement: psycopg prepares a statement on its 5th
    run, and plan_cache_mode auto then keeps the generic plan when it costs no more than the custom ones.
    With `LIMIT :k` the generic plan cannot see the limit and is a poor one (the binary query's took 119 ms
    at 1M when forced), so Postgres planned every run again: ~0.4 ms of a 1.7 ms halfvec query and of a
    4.4 ms binary one at 1M (docs/serving.md, "Plans kept"). Callers pass literals only for the index queries without a
    category filter, whose one sensible plan is the kind's index; a category filter keeps per-run plans,
    which see the category's size.
    """
    return (":k" if k is None else str(int(k))), (":kc" if kc is None else str(int(kc)))


# Products of the candidates (cand: product_id, dist), best first; shared by every kind.
_PRODUCTS = """
        SELECT p.external_id, p.title, p.category, p.price::float AS price, cand.dist,
               (SELECT url FROM product_images pi WHERE pi.product_id = p.id AND pi.status = 'ok'
                ORDER BY pi.position LIMIT 1) AS image_url
        FROM cand JOIN products p ON p.id = cand.product_id
        WHERE NOT p.deleted AND p.in_stock
        ORDER BY cand.dist, p.external_id
        LIMIT :limit"""


QVEC = "CAST(:qvec AS vector)"  # the query vector of a search by vector


def _source(model_key: str, by_vector: bool, *, coded: bool = False, qbits: str | None = None) -> tuple[str, str]:
    """The query CTEs (src, q: the query vectors; `coded`: only those with a code) and the clause
    excluding the viewed product. `qbits`: an expression of the query vector (`QVEC` when `by_vector`, else
    over `it`, the query's items) that q also selects, as `qbits`, so that a bit kind's query computes it
    once per query item instead of once per candidate."""
    if by_vector:
        extra = f", {qbits} AS qbits" if qbits else ""
        return f"src AS (SELECT CAST(NULL AS bigint) AS id), q AS (SELECT {QVEC} AS embedding{extra})", ""
    columns = f"it.embedding, {qbits} AS qbits" if qbits else "it.embedding"
    where = " AND it.code IS NOT NULL" if coded else ""
    return (
        f"""src AS (
            SELECT id FROM products WHERE tenant_id = :tenant AND external_id = :pid AND NOT deleted
        ), q AS (
            SELECT {columns} FROM items it JOIN src ON it.product_id = src.id WHERE it.model = '{model_key}'{where}
        )""",
        "AND i.product_id <> (SELECT id FROM src)",
    )


def _binary_sql(model_key: str, dim: int, *, category: bool, by_vector: bool, limits=(":k", ":kc")) -> str:
    """Per query item, the kc nearest items by Hamming distance of their sign bits, re-ranked to k by cosine."""
    query, exclude = _source(model_key, by_vector, qbits=bit_expr(dim, QVEC if by_vector else "it.embedding"))
    return _rerank_sql(model_key, query, exclude, category, bit_expr(dim, "i.embedding"), limits)


def _codes_sql(model_key: str, dim: int, bits: int, *, category: bool, limits=(":k", ":kc")) -> str:
    """Per query item with a code, the kc nearest items by Hamming distance of their learned codes, re-ranked to
    k by cosine on the full vectors of the same rows."""
    query, exclude = _source(model_key, False, coded=True, qbits=code_expr(bits, "it.code"))
    return _rerank_sql(model_key, query, exclude, category, code_expr(bits, "i.code"), limits)


def _rerank_sql(model_key, query, exclude, category, order_i, limits) -> str:
    """The bit kinds' query: per query item, the kc nearest items by `order_i <~> q.qbits` (the kind's IVFFlat
    index), re-ranked to k by cosine on their full vectors (the rows the index scan found), grouped to products;
    `limits`: the (k, kc) LIMIT values, literals or parameters (`_limits`).

    The re-rank's cosine is on the stored float32 vectors, not on the halfvec index's expression: no
    conversion per candidate (two halfvec casts per row cost ~0.4 ms of a ~4 ms query at 1M with 640
    candidates, docs/serving.md), and the ranking is at least as precise.
    """
    return f"""
        WITH {query}, cand AS (
            SELECT c.product_id, min(c.dist) AS dist
            FROM q CROSS JOIN LATERAL (
                SELECT h.product_id, h.dist FROM (
                    SELECT i.product_id, i.embedding <=> q.embedding AS dist
                    FROM items i
                    WHERE i.model = '{model_key}' AND i.tenant_id = :tenant AND i.in_stock
                      {exclude} {"AND i.category = :category" if category else ""}
                    ORDER BY {order_i} <~> q.qbits
                    LIMIT {limits[1]}
                ) h
                ORDER BY h.dist
                LIMIT {limits[0]}
            ) c
            GROUP BY c.product_id
        )
        {_PRODUCTS}
    """


@lru_cache(maxsize=256)
def _query(
    model_key: str,
    dim: int,
    *,
    exact: bool,
    category: bool,
    by_vector: bool = False,
    kind: str = "halfvec",
    bits: int | None = None,
    k: int | None = None,
    kc: int | None = None,
):
    """The parsed statement, built once per shape (text() parsing showed up in the API's profile)."""
    return text(
        _sql(model_key, dim, exact=exact, category=category, by_vector=by_vector, kind=kind, bits=bits, k=k, kc=kc)
    )


_HNSW_SETTINGS = text(
    "SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true), set_config('hnsw.ef_search', :ef, true)"
)
# IVFFlat's iterative scan probes further lists when a filter (category, stock, tenant) leaves too few rows.
_IVF_SETTINGS = text(
    "SELECT set_config('ivfflat.iterative_scan', 'relaxed_order', true), set_config('ivfflat.probes', :probes, true)"
)


def similar_products(
    session: Session,
    *,
    tenant_id: str,
    external_id: str,
    model_key: str,
    dim: int,
    limit: int = 10,
    category: str | None = None,
    ef_search: int = 64,
    exact_threshold: int | None = None,
    strategy: str = "auto",
    index_kind: str = "halfvec",
    ivf: tuple[int, int] | None = None,
) -> VisualResult:
    """Products of the same tenant nearest to any item of `external_id`, best item match first.

    strategy: "auto" (exact for small filtered sets, else the kind's index with an exact retry if short),
    "hnsw" or "exact" (forced; benchmarks and tests compare them). index_kind: which of the
    model's indexes the "hnsw" strategy searches (db/vector_index.py INDEX_KINDS: HNSW or IVFFlat).
    ivf: the bit kinds' (probes, re-rank factor), instead of `ivf_settings` (the tuning tries them).
    """
    if not _MODEL_KEY.match(model_key):
        raise ValueError(f"invalid model key {model_key!r}")
    check_kind(index_kind)
    k = max(4 * limit, 40)
    params = {"tenant": tenant_id, "pid": external_id, "limit": limit, "k": k, "kc": k, "category": category}
    if strategy == "auto":
        strategy = choose_strategy(
            session,
            model_key=model_key,
            tenant_id=tenant_id,
            category=category,
            exact_threshold=exact_threshold,
            index_kind=index_kind,
        )
    coded = strategy == "hnsw" and index_kind == "codes"
    bits = _code_bits(session, model_key, tenant_id, external_id) if coded else None
    if coded and bits is None:
        strategy = "exact"  # the product has no codes of this model (yet): exact is slow but correct
    used = strategy
    if strategy == "hnsw":
        if index_kind in IVF_KINDS:
            probes, factor = ivf or ivf_settings(session, model_key, index_kind, filtered=category is not None)
            params["kc"] = min(factor * k, MAX_CANDIDATES)
            session.execute(_IVF_SETTINGS, {"probes": str(probes)})
        else:
            _hnsw_settings(session, min(max(ef_search, k), MAX_EF_SEARCH))
        filtered = category is not None
        literal = {} if filtered else {"k": params["k"], "kc": params["kc"]}  # see _limits
        query = _query(model_key, dim, exact=False, category=filtered, kind=index_kind, bits=bits, **literal)
        rows = session.execute(query, params).all()
        if len(rows) < limit:  # filters removed too much even for the iterative scan
            rows, used = _exact(session, model_key, dim, category, params), "hnsw+exact"
    else:
        rows = _exact(session, model_key, dim, category, params)
    if not rows and not _has_vectors(session, model_key, tenant_id, external_id):
        return VisualResult(None, used)
    return VisualResult(
        [Neighbour(r.external_id, r.title, r.category, r.price, r.image_url, float(r.dist)) for r in rows], used
    )


def similar_to_vector(
    session: Session, *, tenant_id: str, vector, model_key: str, dim: int, limit: int = 10, ef_search: int = 64
) -> list[Neighbour]:
    """Products of the tenant nearest to a query vector (search by image or by text)."""
    if not _MODEL_KEY.match(model_key):
        raise ValueError(f"invalid model key {model_key!r}")
    vec = "[" + ",".join(f"{float(x):.7g}" for x in vector) + "]"
    params = {"tenant": tenant_id, "qvec": vec, "limit": limit, "k": max(4 * limit, 40), "category": None}
    _hnsw_settings(session, max(ef_search, params["k"]))
    query = _query(model_key, dim, exact=False, category=False, by_vector=True, k=params["k"])
    rows = session.execute(query, params).all()
    if len(rows) < limit:
        rows = session.execute(_query(model_key, dim, exact=True, category=False, by_vector=True), params).all()
    return [Neighbour(r.external_id, r.title, r.category, r.price, r.image_url, float(r.dist)) for r in rows]


def choose_strategy(
    session: Session,
    *,
    model_key: str,
    tenant_id: str,
    category: str | None,
    exact_threshold: int | None = None,
    index_kind: str = "halfvec",
) -> str:
    """ "exact" when at most `exact_threshold` items pass the filters, else "hnsw" (a bounded count).

    The default threshold is EXACT_THRESHOLD for halfvec, EXACT_THRESHOLD_BITS for the bit kinds
    (EXACT_THRESHOLD_BITS_FILTERED with a category: there it also buys recall the Hamming scan lacks).

    Either strategy returns full, correct lists (HNSW falls back to exact when it comes back short),
    so a caller may reuse the answer for a while.
    """
    if not _MODEL_KEY.match(model_key):
        raise ValueError(f"invalid model key {model_key!r}")
    if exact_threshold is None:
        if check_kind(index_kind) not in IVF_KINDS:
            exact_threshold = EXACT_THRESHOLD
        else:
            exact_threshold = EXACT_THRESHOLD_BITS if category is None else EXACT_THRESHOLD_BITS_FILTERED
    return (
        "exact"
        if _filtered_items(session, model_key, tenant_id, category, exact_threshold) <= exact_threshold
        else "hnsw"
    )


def _hnsw_settings(session: Session, ef_search: int) -> None:
    """Iterative scan (filters applied inside the index scan) and the candidate list, for this transaction only.

    One round trip for both (set_config with is_local = true is SET LOCAL).
    """
    session.execute(_HNSW_SETTINGS, {"ef": str(int(ef_search))})


def rerank_factor(kind: str, entries: int | None, *, filtered: bool = False) -> int:
    """Hamming candidates per query item as a multiple of k, for a bit kind's index of `entries` entries.

    RERANK_FACTOR without a filter (`entries` None, not known: the larger factor), RERANK_FACTOR_FILTERED
    with one; 1 for halfvec (its HNSW scan ranks by cosine itself).
    """
    if check_kind(kind) not in IVF_KINDS:
        return 1
    if filtered:
        return RERANK_FACTOR_FILTERED[kind]
    (small, f_small), (large, f_large) = RERANK_FACTOR[kind]
    if entries is None or entries >= large:
        return f_large
    if entries <= small:
        return f_small
    return round(f_small * (f_large / f_small) ** (math.log(entries / small) / math.log(large / small)))


ENTRIES_TTL_S = 300.0  # how long an index's entry count and tuning are reused (they move with the catalog, slowly)
UNKNOWN_ENTRIES_TTL_S = 10.0  # ... and "no such index yet" (a build or a rebuild's swap under way)
# index name -> (read at, entries (None: unknown), tuning (None: not tuned))
_ENTRIES: dict[str, tuple[float, int | None, IvfTuning | None]] = {}


def _index_state(session: Session, model_key: str, kind: str) -> tuple[int | None, IvfTuning | None]:
    """The entries of the model's index of `kind`, as Postgres last counted them (pg_class.reltuples: set by
    the build, kept current by autovacuum and ANALYZE; None: unknown, no such index or one a concurrent build has
    not finished, whose count is 0 until then), and its tuning (db/ivf_tuning.py), read at most once per
    ENTRIES_TTL_S.

    Cached per process by index name: a process serves one database (tests reset the cache between databases)."""
    name = index_name(model_key, kind)
    now = time.monotonic()
    hit = _ENTRIES.get(name)
    if hit is not None and now - hit[0] < (ENTRIES_TTL_S if hit[1] is not None else UNKNOWN_ENTRIES_TTL_S):
        return hit[1], hit[2]
    row = session.execute(INDEX_STATE, {"n": name}).first()
    entries = int(row.reltuples) if row is not None and row.reltuples >= 0 else None  # -1: never counted
    tuning = IvfTuning.parse(row.comment) if row is not None else None
    _ENTRIES[name] = (now, entries, tuning)
    return entries, tuning


def forget_index_state(model_key: str, kind: str) -> None:
    """Drop this process's cached entries and tuning of the model's index of `kind` (a tuning just written here);
    other processes read the new state within ENTRIES_TTL_S."""
    _ENTRIES.pop(index_name(model_key, kind), None)


def index_entries(session: Session, model_key: str, kind: str) -> int | None:
    """The entries of the model's index of `kind` as Postgres last counted them; None: unknown (`_index_state`)."""
    return _index_state(session, model_key, kind)[0]


def ivf_settings(session: Session, model_key: str, kind: str, *, filtered: bool) -> tuple[int, int]:
    """(probes, re-rank factor) of a bit kind's query: the index's own tuning (db/ivf_tuning.py) without a filter
    when it has one, else IVF_PROBES and `rerank_factor`. A filtered query keeps IVF_PROBES and
    RERANK_FACTOR_FILTERED: the tuning measures unfiltered queries, and the iterative scan goes on from those
    probes until enough candidates pass the filter."""
    if filtered:
        return IVF_PROBES, rerank_factor(kind, None, filtered=True)
    entries, tuning = _index_state(session, model_key, kind)
    if tuning is not None:
        return tuning.probes, tuning.factor
    return IVF_PROBES, rerank_factor(kind, entries)


_BITS: dict[str, int] = {}  # model key -> code width; a model key names one artefact, so it never changes


def _code_bits(session: Session, model_key: str, tenant_id: str, external_id: str) -> int | None:
    """The width of `model_key`'s codes, from the viewed product's (None: it has none, so no codes query)."""
    if model_key not in _BITS:
        bits = session.scalar(
            text(
                "SELECT bit_length(it.code) FROM items it JOIN products p ON p.id = it.product_id "
                "WHERE p.tenant_id = :t AND p.external_id = :pid AND NOT p.deleted AND it.model = :m "
                "AND it.code IS NOT NULL LIMIT 1"
            ),
            {"t": tenant_id, "pid": external_id, "m": model_key},
        )
        if bits is None:
            return None
        _BITS[model_key] = int(bits)
    return _BITS[model_key]


def _exact(session: Session, model_key: str, dim: int, category: str | None, params: dict) -> list:
    return session.execute(_query(model_key, dim, exact=True, category=category is not None), params).all()


def _filtered_items(session: Session, model_key: str, tenant_id: str, category: str | None, cap: int) -> int:
    """How many items pass the filters, counted up to cap + 1 (an index-only scan, bounded)."""
    cat = "AND category = :category" if category is not None else ""
    return session.scalar(
        text(
            f"SELECT count(*) FROM (SELECT 1 FROM items WHERE tenant_id = :tenant AND model = '{model_key}' "
            f"AND in_stock {cat} LIMIT :cap) x"
        ),
        {"tenant": tenant_id, "category": category, "cap": cap + 1},
    )


def _has_vectors(session: Session, model_key: str, tenant_id: str, external_id: str) -> bool:
    return (
        session.execute(
            text(
                f"SELECT 1 FROM items it JOIN products p ON p.id = it.product_id "
                f"WHERE p.tenant_id = :tenant AND p.external_id = :pid AND NOT p.deleted "
                f"AND it.model = '{model_key}' LIMIT 1"
            ),
            {"tenant": tenant_id, "pid": external_id},
        ).first()
        is not None
    )
