"""The three index kinds (halfvec, binary, codes) against exact search, on clustered signed vectors in real Postgres."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from sqlalchemy import text

from db import vector_queries
from db.tenants import create_tenant
from db.vector_index import (
    INDEX_KINDS,
    IVF_KINDS,
    IVF_PROBES,
    _covered_rows,
    drop_vector_index,
    ensure_vector_index,
    index_lists,
    index_name,
    index_ready,
    index_size_mb,
    ivf_lists,
    refresh_ivf_index,
    write_codes,
)
from db.vector_queries import (
    _HNSW_SETTINGS,
    _IVF_SETTINGS,
    MAX_CANDIDATES,
    _query,
    choose_strategy,
    index_entries,
    rerank_factor,
    similar_products,
)

pytestmark = pytest.mark.integration
MODEL, DIM, BITS, N, CENTRES, CATEGORIES = "kinds@1", 64, 32, 3000, 40, 4
QUERIES = range(0, N, N // 50)  # 50 viewed products
LISTS = 4 * IVF_PROBES


def clustered(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Signed unit vectors (centres, a low-rank spread giving well-defined neighbours inside a cluster, noise)
    and their cluster numbers."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(CENTRES, DIM)) / np.sqrt(DIM)  # the bench's shape: unit centres, spread ~0.4
    basis = rng.normal(size=(8, DIM)) / np.sqrt(DIM)
    cluster = rng.integers(0, CENTRES, n)
    x = centres[cluster] + 0.15 * rng.normal(size=(n, 8)) @ basis + 0.1 * rng.normal(size=(n, DIM)) / np.sqrt(DIM)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), cluster


def learned_like_codes(cluster: np.ndarray, seed: int) -> np.ndarray:
    """Codes as a quantizing head trained on cluster labels gives them: one code per cluster, 2 bits flipped per item.

    (Random-hyperplane codes of the vectors themselves are far weaker: 0.78 recall after re-rank here.)
    """
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 2, size=(CENTRES, BITS))[cluster]
    flip = rng.integers(0, BITS, size=(len(cluster), 2))
    codes[np.arange(len(cluster))[:, None], flip] ^= 1
    return codes.astype(np.uint8)


VECTORS, CLUSTER = clustered(N, 7)
CODES = learned_like_codes(CLUSTER, 8)


def add_products(s, tenant: str, prefix: str, vectors: np.ndarray, model: str = MODEL) -> list[int]:
    """Products with one whole-image item each (category i % CATEGORIES); returns the item ids in order."""
    n = len(vectors)
    args = {"t": tenant, "ext": [f"{prefix}{i}" for i in range(n)], "cat": [f"c{i % CATEGORIES}" for i in range(n)]}
    s.execute(
        text("""INSERT INTO products (tenant_id, external_id, version, title, category, price, currency, in_stock,
                                      attributes, deleted, indexed_at)
                SELECT CAST(:t AS varchar), e, 1, 'Product ' || e, c, 10, 'EUR', true, '{}', false, now()
                FROM unnest(CAST(:ext AS text[]), CAST(:cat AS text[])) AS u(e, c)"""),
        args,
    )
    s.execute(
        text("""INSERT INTO product_images (tenant_id, product_id, url, position, status)
                SELECT CAST(:t AS varchar), id, 'https://x.test/' || external_id || '.jpg', 0, 'ok'
                FROM products WHERE tenant_id = :t AND external_id = ANY(:ext)"""),
        args,
    )
    rows = s.execute(
        text("""INSERT INTO items (tenant_id, product_id, image_id, kind, box, label, score, model, dim, in_stock,
                                   category, embedding)
                SELECT CAST(:t AS varchar), p.id, pi.id, 'whole', '{0,0,1,1}', 'whole', 1.0, :m, :d, true,
                       p.category, u.v
                FROM unnest(CAST(:ext AS text[]), CAST(:emb AS vector[])) WITH ORDINALITY AS u(e, v, n)
                JOIN products p ON p.tenant_id = :t AND p.external_id = u.e
                JOIN product_images pi ON pi.product_id = p.id
                ORDER BY u.n
                RETURNING id"""),
        {**args, "m": model, "d": vectors.shape[1], "emb": ["[" + ",".join(map(str, v)) + "]" for v in vectors]},
    ).all()
    return [r.id for r in rows]


@pytest.fixture(scope="module")
def catalog(postgres):
    """Tenant acme: 3,000 products, their items with 32-bit codes; tenant globex: the same vectors as g<i>."""
    from db.session import create_db_engine, session_factory

    engine = create_db_engine(postgres.create_database("index_kinds", template="vitrine_template"))
    sessions = session_factory(engine)
    with sessions.begin() as s:
        for t in ("acme", "globex"):
            create_tenant(s, t, t)
        for tenant, prefix in (("acme", "p"), ("globex", "g")):
            ids = add_products(s, tenant, prefix, VECTORS)
            assert write_codes(s, tenant, MODEL, ids, CODES) == N
        conn = s.connection()
        ensure_vector_index(conn, MODEL, DIM)
        # More lists than a query probes (IVF_PROBES): the answers must come from a part of the index.
        ensure_vector_index(conn, MODEL, DIM, kind="binary", lists=LISTS)
        ensure_vector_index(conn, MODEL, BITS, kind="codes", lists=LISTS)
        s.execute(text("ANALYZE items"))
    yield sessions
    engine.dispose()


def exact_top10(q: int, category: str | None) -> list[str]:
    """The exact answer computed here, in numpy (cosine on the full vectors)."""
    sims = VECTORS @ VECTORS[q]
    sims[q] = -np.inf
    if category is not None:
        sims[np.arange(N) % CATEGORIES != int(category[1:])] = -np.inf
    return [f"p{i}" for i in np.argsort(-sims, kind="stable")[:10]]


def recall(sessions, kind: str, category: bool) -> tuple[float, int, list[str]]:
    hits, short, seen = 0, 0, []
    with sessions() as s:
        for q in QUERIES:
            cat = f"c{q % CATEGORIES}" if category else None
            got = similar_products(
                s,
                tenant_id="acme",
                external_id=f"p{q}",
                model_key=MODEL,
                dim=DIM,
                category=cat,
                strategy="hnsw",
                index_kind=kind,
            )
            s.rollback()
            assert got.strategy == "hnsw"  # no exact retry: the kind's own index answered in full
            ids = [n.product_id for n in got.neighbours]
            short += len(ids) < 10
            hits += len(set(ids) & set(exact_top10(q, cat)))
            seen += ids
            assert all(n.category == cat for n in got.neighbours) if cat else True
    return hits / (10 * len(QUERIES)), short, seen


def hamming_only_recall(signs: np.ndarray) -> float:
    """What the Hamming candidates alone would serve (no re-rank): the control the thresholds below must beat."""
    hits = 0
    for q in QUERIES:
        d = (signs != signs[q]).sum(axis=1).astype(float)
        d[q] = np.inf
        hits += len({f"p{i}" for i in np.argsort(d, kind="stable")[:10]} & set(exact_top10(q, None)))
    return hits / (10 * len(QUERIES))


@pytest.mark.parametrize("category", [False, True], ids=["all", "category"])
@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_each_kind_serves_the_exact_neighbours_of_its_own_tenant(catalog, kind, category):
    r, short, seen = recall(catalog, kind, category)
    assert short == 0 and r >= 0.95, (kind, r, short)
    # globex holds the very same vectors (distance 0 to every query): one leak would top a list.
    assert not [pid for pid in seen if pid.startswith("g")]


def test_hamming_alone_would_miss_the_threshold():
    # Why the re-rank matters: ranking by the sign bits or the codes alone stays well below 0.95.
    assert hamming_only_recall(VECTORS > 0) < 0.85
    assert hamming_only_recall(CODES) < 0.6


@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_each_kind_plans_its_own_index_also_in_the_plan_postgres_keeps(catalog, kind):
    # A query whose expression no index matches would still be right, by a sequential scan: check the plan,
    # for this request's values and as the generic plan a prepared statement keeps (its LIMITs are literals).
    bits = BITS if kind == "codes" else None
    kc = min(rerank_factor(kind, 2 * N) * 40, MAX_CANDIDATES)  # as similar_products asks (2 tenants' items)
    sql = _query(MODEL, DIM, exact=False, category=False, kind=kind, bits=bits, k=40, kc=kc).text
    assert ":k" not in sql and ":kc" not in sql
    with catalog() as s:
        s.execute(_IVF_SETTINGS if kind in IVF_KINDS else _HNSW_SETTINGS, {"probes": str(IVF_PROBES), "ef": "64"})
        params = {"tenant": "acme", "pid": "p0", "limit": 10}
        plan = "\n".join(r[0] for r in s.execute(text("EXPLAIN " + sql), params))
        numbered = sql.replace(":tenant", "$1").replace(":pid", "$2").replace(":limit", "$3")
        generic = "\n".join(r[0] for r in s.execute(text("EXPLAIN (GENERIC_PLAN) " + numbered)))
    assert f"Index Scan using {index_name(MODEL, kind)}" in plan, plan
    assert f"Index Scan using {index_name(MODEL, kind)}" in generic, generic


def test_an_unfiltered_query_is_planned_once_per_connection(catalog):
    # psycopg prepares a statement on its 5th run on a connection; with literal LIMITs Postgres then keeps the
    # generic plan (with `LIMIT :k` it planned every run again, ~0.4 ms at 1M). Sessions that commit, as the
    # API's do (a rollback makes psycopg deallocate its prepared statements).
    from db.session import create_db_engine, session_factory

    url = catalog.kw["bind"].url.render_as_string(hide_password=False)
    engine = create_db_engine(url, pool_size=1, max_overflow=0)  # one connection: its prepared statements
    sessions = session_factory(engine)
    try:
        for i in range(12):
            with sessions() as s:
                got = similar_products(
                    s, tenant_id="acme", external_id=f"p{i}", model_key=MODEL, dim=DIM, strategy="hnsw"
                )
                assert len(got.neighbours) == 10
                s.commit()
        with sessions() as s:
            plans = s.execute(
                text("SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement LIKE '%WITH src%'")
            ).all()
    finally:
        engine.dispose()
    assert len(plans) == 1 and plans[0].generic_plans > 0, plans


def test_binary_index_is_smaller_than_halfvec_and_codes_sit_on_the_vectors_rows(catalog):
    with catalog() as s:
        conn = s.connection()
        sizes = {kind: index_size_mb(conn, MODEL, kind) for kind in INDEX_KINDS}
        assert sizes["binary"] < sizes["halfvec"] and sizes["codes"] < sizes["halfvec"], sizes
        assert index_size_mb(conn, "nothing@1", "binary") is None
        rows = s.execute(
            text("""SELECT count(*) AS n, count(code) AS coded, min(bit_length(code)) AS bits,
                           count(DISTINCT model) AS models
                    FROM items WHERE tenant_id = 'acme'"""),
        ).one()
    assert (rows.n, rows.coded, rows.bits, rows.models) == (N, N, BITS, 1)


def test_write_codes_replaces_the_items_codes(sessions):
    with sessions.begin() as s:
        create_tenant(s, "acme", "acme")
        ids = add_products(s, "acme", "p", VECTORS[:50])
        assert write_codes(s, "acme", MODEL, ids, CODES[:50]) == 50
        assert write_codes(s, "acme", MODEL, ids[:10], 1 - CODES[:10]) == 10  # a resumed page writes again
        stored = s.execute(text("SELECT code FROM items WHERE model = :m ORDER BY product_id"), {"m": MODEL}).all()
        # Another tenant's item ids, or another model's, write nothing.
        assert write_codes(s, "nobody", MODEL, ids[:5], CODES[:5]) == 0
        assert write_codes(s, "acme", "other@1", ids[:5], CODES[:5]) == 0
        with pytest.raises(ValueError):
            write_codes(s, "acme", MODEL, ids[:5], CODES[:4])
    assert len(stored) == 50
    bits = [np.array([c == "1" for c in r.code]) for r in stored]
    assert np.array_equal(bits[0], (1 - CODES[0]) > 0) and np.array_equal(bits[20], CODES[20] > 0)


def test_an_interrupted_concurrent_build_is_not_ready_and_is_rebuilt(sessions, db_engine):
    with sessions.begin() as s:
        create_tenant(s, "acme", "acme")
        add_products(s, "acme", "p", VECTORS[:2000])
    with db_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        # A build cancelled half-way (as by a crash or a timeout) leaves an INVALID index behind.
        conn.execute(text("SET statement_timeout = '5ms'"))
        with pytest.raises(Exception, match="statement timeout"):
            ensure_vector_index(conn, MODEL, DIM, concurrently=True)
        conn.execute(text("SET statement_timeout = 0"))
        assert conn.scalar(
            text("SELECT NOT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:n)"),
            {"n": index_name(MODEL, "halfvec")},
        )
        assert not index_ready(conn, MODEL, "halfvec")
        ensure_vector_index(conn, MODEL, DIM, concurrently=True)
        assert index_ready(conn, MODEL, "halfvec")
        assert not index_ready(conn, MODEL, "binary")  # never built


def _ivf_indexes(conn) -> set[str]:
    return set(conn.scalars(text("SELECT indexname FROM pg_indexes WHERE indexname LIKE 'ix_items_ivf%'")))


def _binary_index_under_rebuild(sessions, rebuild) -> str:
    """500 products, their binary index, and the rebuild's advisory lock held on `rebuild`; the index name."""
    with sessions.begin() as s:
        create_tenant(s, "acme", "acme")
        add_products(s, "acme", "p", VECTORS[:500])
    name = ensure_vector_index(rebuild, MODEL, DIM, kind="binary", concurrently=True)
    assert rebuild.scalar(text("SELECT pg_try_advisory_lock(hashtext(:n))"), {"n": name})
    return name


def test_ivf_lists_are_the_square_root_of_the_rows():
    assert [ivf_lists(n) for n in (0, 3, 999, 5000, 100_000, 1_000_000, 4_000_000)] == [1, 1, 31, 70, 316, 1000, 2000]


def test_ivf_lists_fit_the_builds_memory(sessions, db_engine):
    assert ivf_lists(1_000_000, 64 * 2**20) == 533 and ivf_lists(1_000_000, 2**30) == 1000
    assert ivf_lists(1_000_000, 64 * 2**20, dim=1280) == 505  # wider bit strings: less room for lists
    with sessions.begin() as s:
        create_tenant(s, "acme", "acme")
        add_products(s, "acme", "p", np.tile(VECTORS, (2, 1))[:5000])  # sqrt: 70 lists
    with db_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        # pgvector refuses a build whose k-means needs more than maintenance_work_mem (70 lists: ~1.4 MB).
        conn.execute(text("SET maintenance_work_mem = '1MB'"))
        ensure_vector_index(conn, MODEL, DIM, kind="binary", concurrently=True)
        assert index_lists(conn, MODEL, "binary") == 36 and index_ready(conn, MODEL, "binary")
        conn.execute(text("RESET maintenance_work_mem"))


def test_index_entries_are_postgres_count_of_the_index(catalog):
    with catalog() as s:
        assert index_entries(s, MODEL, "binary") == 2 * N and index_entries(s, MODEL, "codes") == 2 * N  # 2 tenants
        assert index_entries(s, "none@1", "binary") is None  # no such index: the larger factor


def test_rerank_factor_follows_the_index_size_between_the_measured_sizes():
    # Without a filter: the measured factor at and below 100k entries and at and above 1M, geometric between.
    assert [rerank_factor("binary", n) for n in (0, 100_000, 316_228, 1_000_000, 5_000_000)] == [4, 4, 8, 16, 16]
    assert [rerank_factor("codes", n) for n in (50_000, 100_000, 316_228, 1_000_000)] == [4, 4, 10, 25]
    assert rerank_factor("binary", None) == 16 and rerank_factor("codes", None) == 25  # unknown: the larger
    assert rerank_factor("binary", 1000, filtered=True) == 25 and rerank_factor("halfvec", 10**6) == 1


def test_an_ivf_index_built_on_few_rows_is_rebuilt_once_the_catalog_outgrows_it(sessions, db_engine):
    with sessions.begin() as s:
        create_tenant(s, "acme", "acme")
        add_products(s, "acme", "p", VECTORS[:500])
    with db_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        name = ensure_vector_index(conn, MODEL, DIM, kind="binary", concurrently=True)
        assert index_lists(conn, MODEL, "binary") == 22  # 500 rows: sqrt
        assert refresh_ivf_index(conn, MODEL, DIM, "binary") is None  # not outgrown: nothing to do
    with sessions.begin() as s:
        add_products(s, "acme", "q", VECTORS[:1000])  # 1,500 rows: 38 lists wanted, < 2 x 22
    with db_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE items"))  # the index's entries as autovacuum would count them by now
        assert refresh_ivf_index(conn, MODEL, DIM, "binary") is None
    with sessions.begin() as s:
        add_products(s, "acme", "r", VECTORS[:2000])  # 3,500 rows: 59 lists wanted, >= 2 x 22
    with db_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE items"))
        assert refresh_ivf_index(conn, MODEL, DIM, "binary") == 59
        assert index_lists(conn, MODEL, "binary") == 59 and index_ready(conn, MODEL, "binary")
        assert refresh_ivf_index(conn, MODEL, DIM, "binary") is None
        # A rebuild that died between dropping the old index and renaming its replacement: the replacement serves.
        conn.execute(text(f"ALTER INDEX {name} RENAME TO {name}_next"))
        assert refresh_ivf_index(conn, MODEL, DIM, "binary") is None
        assert index_ready(conn, MODEL, "binary") and index_lists(conn, MODEL, "binary") == 59
        assert _ivf_indexes(conn) == {name}
        # A missing index is built; HNSW kinds have nothing to refresh.
        conn.execute(text(f"DROP INDEX {name}"))
        assert refresh_ivf_index(conn, MODEL, DIM, "binary") == 59 and index_ready(conn, MODEL, "binary")
        with pytest.raises(ValueError):
            refresh_ivf_index(conn, MODEL, DIM, "halfvec")
        # Dropping the model's index (retiring it) also drops a replacement a rebuild left behind.
        conn.execute(text(f"CREATE INDEX {name}_next ON items (id) WHERE model = '{MODEL}'"))
        drop_vector_index(conn, MODEL, "binary", concurrently=True)
        assert not _ivf_indexes(conn)
    with sessions() as s:
        got = similar_products(
            s, tenant_id="acme", external_id="p0", model_key=MODEL, dim=DIM, strategy="hnsw", index_kind="binary"
        )
    assert got.strategy == "hnsw" and len(got.neighbours) == 10  # no index: a scan, still the full answer
    with db_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        assert refresh_ivf_index(conn, MODEL, DIM, "binary") == 59
        conn.execute(text("ANALYZE items"))  # as autovacuum would have by now: the planner sees 3,500 rows
    with sessions() as s:
        got = similar_products(
            s, tenant_id="acme", external_id="p0", model_key=MODEL, dim=DIM, strategy="hnsw", index_kind="binary"
        )
        s.rollback()
        # ... and the rebuilt index is the one the query plans (a scan would give the same answer).
        s.execute(_IVF_SETTINGS, {"probes": str(IVF_PROBES)})
        sql = _query(MODEL, DIM, exact=False, category=False, kind="binary").text
        params = {"tenant": "acme", "pid": "p0", "limit": 10, "k": 40, "kc": rerank_factor("binary", 3500) * 40}
        plan = "\n".join(r[0] for r in s.execute(text("EXPLAIN " + sql), {**params, "category": None}))
    assert got.strategy == "hnsw" and len(got.neighbours) == 10
    assert f"Index Scan using {name}" in plan, plan


def test_the_refresh_reads_a_valid_index_s_entries_instead_of_counting_the_rows(sessions, db_engine):
    with sessions.begin() as s:
        s.execute(text("ALTER TABLE items SET (autovacuum_enabled = false)"))  # this test's database: no recount
        create_tenant(s, "acme", "acme")
        add_products(s, "acme", "p", VECTORS[:500])
    with db_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        name = ensure_vector_index(conn, MODEL, DIM, kind="binary", concurrently=True)
    with sessions.begin() as s:
        add_products(s, "acme", "q", VECTORS[:10])
    with db_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        assert _covered_rows(conn, MODEL, name) == 500  # as the build counted them
        assert _covered_rows(conn, MODEL) == _covered_rows(conn, MODEL, "ix_items_ivf_bin_none") == 510  # a count


@pytest.mark.parametrize("call", ["ensure", "drop"])
def test_builds_and_drops_wait_for_a_rebuild_under_way(sessions, db_engine, call):
    """A rebuild (refresh_ivf_index) drops the old index, then renames its replacement: a build landing in
    between made a second index (and the rename failed); a retirement's drop in between left the replacement,
    renamed, as an index of a retired model. Both now wait for the rebuild's lock; a worker's start-up build,
    inside a transaction, leaves the index to the rebuild instead of waiting (it could hold locks the rebuild's
    CREATE INDEX CONCURRENTLY waits for)."""
    with db_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as rebuild:
        name = _binary_index_under_rebuild(sessions, rebuild)
        # The rebuild, stopped between its drop and its rename (as refresh_ivf_index holds the lock).
        rebuild.execute(text(f"ALTER INDEX {name} RENAME TO {name}_next"))
        with db_engine.begin() as conn:  # the worker's start-up: its indexes in one transaction
            assert ensure_vector_index(conn, MODEL, DIM, kind="binary") == name
        assert _ivf_indexes(rebuild) == {f"{name}_next"}  # built nothing

        def other() -> None:
            with db_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                if call == "ensure":
                    ensure_vector_index(conn, MODEL, DIM, kind="binary", concurrently=True)
                else:
                    drop_vector_index(conn, MODEL, "binary", concurrently=True)

        worker = threading.Thread(target=other)
        worker.start()
        worker.join(timeout=1.0)
        assert worker.is_alive()  # waiting on the lock ...
        assert _ivf_indexes(rebuild) == {f"{name}_next"}  # ... having built or dropped nothing
        rebuild.execute(text(f"ALTER INDEX {name}_next RENAME TO {name}"))  # the rebuild finishes
        rebuild.execute(text("SELECT pg_advisory_unlock(hashtext(:n))"), {"n": name})
        worker.join(timeout=60)
        assert not worker.is_alive()
        # One index, the rebuilt one (ensure found it valid); or none at all after the drop.
        assert _ivf_indexes(rebuild) == (set() if call == "drop" else {name})


def test_a_waiting_drop_does_not_deadlock_the_rebuilds_concurrent_build(sessions, db_engine):
    """CREATE INDEX CONCURRENTLY waits for every transaction with an older snapshot. A drop blocked in
    pg_advisory_lock would be one, waiting on the lock the rebuild holds: Postgres aborts one of them
    ("deadlock detected"). The drop polls with no transaction open instead."""
    with db_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as rebuild:
        name = _binary_index_under_rebuild(sessions, rebuild)
        errors: list[BaseException] = []

        def retire() -> None:
            try:
                with db_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                    drop_vector_index(conn, MODEL, "binary", concurrently=True)
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                errors.append(exc)

        worker = threading.Thread(target=retire)
        worker.start()
        worker.join(timeout=0.5)
        assert worker.is_alive()
        # The rebuild's replacement, built concurrently while the drop waits (deadlock_timeout is 1 s).
        rebuild.execute(text(f"CREATE INDEX CONCURRENTLY {name}_next ON items (id) WHERE model = '{MODEL}'"))
        rebuild.execute(text("SELECT pg_advisory_unlock(hashtext(:n))"), {"n": name})
        worker.join(timeout=60)
        assert not worker.is_alive() and not errors, errors
        assert _ivf_indexes(rebuild) == set()


def test_unknown_kinds_and_unsafe_keys_are_refused(sessions):
    with sessions() as s:
        conn = s.connection()
        for call in (
            lambda: ensure_vector_index(conn, MODEL, DIM, kind="pq"),
            lambda: index_ready(conn, MODEL, "ivfflat"),
            lambda: index_name(MODEL, "HALFVEC"),
            lambda: similar_products(s, tenant_id="acme", external_id="p0", model_key=MODEL, dim=DIM, index_kind="x"),
            lambda: ensure_vector_index(conn, "m'; DROP TABLE items; --", DIM, kind="binary"),
            lambda: ensure_vector_index(conn, MODEL, 5000),  # halfvec HNSW stops at 4,000 dimensions
        ):
            with pytest.raises(ValueError):
                call()


def test_codes_kind_without_codes_answers_exactly(sessions):
    # A tenant whose codes are not written (yet) still gets the right answer, from the exact path.
    with sessions.begin() as s:
        create_tenant(s, "acme", "acme")
        add_products(s, "acme", "p", VECTORS[:300], model="nocodes@1")
    with sessions() as s:
        got = similar_products(
            s, tenant_id="acme", external_id="p0", model_key="nocodes@1", dim=DIM, strategy="hnsw", index_kind="codes"
        )
    sims = VECTORS[:300] @ VECTORS[0]
    sims[0] = -np.inf
    assert got.strategy == "exact"
    assert [n.product_id for n in got.neighbours] == [f"p{i}" for i in np.argsort(-sims, kind="stable")[:10]]


def test_a_category_of_the_bit_kinds_is_read_exactly_up_to_its_own_threshold(catalog, monkeypatch):
    # With a category the bit kinds read more items exactly than without one (the Hamming scan recalls less
    # under a filter); scaled down here: 3,000 acme items, ~750 per category.
    monkeypatch.setattr(vector_queries, "EXACT_THRESHOLD_BITS", 500)
    monkeypatch.setattr(vector_queries, "EXACT_THRESHOLD_BITS_FILTERED", 1000)
    with catalog() as s:
        cat = s.scalar(text("SELECT category FROM products WHERE tenant_id = 'acme' AND external_id = 'p5'"))
        size = s.scalar(text("SELECT count(*) FROM products WHERE tenant_id = 'acme' AND category = :c"), {"c": cat})
        assert 500 < size <= 1000
        picks = {
            (c, kind): choose_strategy(s, model_key=MODEL, tenant_id="acme", category=c, index_kind=kind)
            for c in (None, cat)
            for kind in ("binary", "codes")
        }
    assert picks == {
        (None, "binary"): "hnsw",
        (None, "codes"): "hnsw",
        (cat, "binary"): "exact",
        (cat, "codes"): "exact",
    }


def test_the_bit_kinds_read_a_mid_sized_filtered_set_exactly(catalog):
    # 3,000 acme items: above the halfvec threshold (2,000), below the bit kinds' (10,000), where Postgres would
    # read the whole set anyway (B-tree, then a Hamming sort): reading it by cosine costs the same and is exact.
    with catalog() as s:
        picks = {
            kind: choose_strategy(s, model_key=MODEL, tenant_id="acme", category=None, index_kind=kind)
            for kind in INDEX_KINDS
        }
        small = choose_strategy(
            s, model_key=MODEL, tenant_id="acme", category=None, index_kind="binary", exact_threshold=100
        )
        got = similar_products(s, tenant_id="acme", external_id="p5", model_key=MODEL, dim=DIM, index_kind="binary")
    assert picks == {"halfvec": "hnsw", "binary": "exact", "codes": "exact"} and small == "hnsw"
    assert got.strategy == "exact" and [n.product_id for n in got.neighbours] == exact_top10(5, None)


def test_index_entries_follow_the_catalog_and_an_index_under_construction_has_none(sessions, db_engine):
    # The re-rank factor follows them: an index built on few rows must not keep reporting those, and one a
    # concurrent build has not finished (INVALID, no entries counted yet) must not pass for an empty catalog.
    with sessions.begin() as s:
        create_tenant(s, "acme", "acme")
        add_products(s, "acme", "p", VECTORS[:500])
        add_products(s, "acme", "x", VECTORS[:500], model="other@1")
    with db_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        ensure_vector_index(conn, MODEL, DIM, kind="binary", concurrently=True)  # built on 500 rows
    with sessions.begin() as s:
        add_products(s, "acme", "q", VECTORS[500:])  # the catalog grows 6x
    with db_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("DELETE FROM items WHERE model = :m AND product_id % 10 = 0"), {"m": MODEL})
        conn.execute(text("VACUUM ANALYZE items"))
        left = conn.scalar(text("SELECT count(*) FROM items WHERE model = :m"), {"m": MODEL})
    with sessions() as s:
        assert abs(index_entries(s, MODEL, "binary") - left) <= 0.05 * left, (index_entries(s, MODEL, "binary"), left)
    vector_queries._ENTRIES.clear()
    with db_engine.begin() as conn:  # as a CREATE INDEX CONCURRENTLY under way leaves it (pg_index.indisvalid)
        conn.execute(text("UPDATE pg_index SET indisvalid = false WHERE indexrelid = to_regclass(:n)"),
                     {"n": index_name(MODEL, "binary")})  # fmt: skip
    with sessions() as s:
        assert index_entries(s, MODEL, "binary") is None  # unknown: the larger factor, asked again in 10 s
