"""Probes and candidates of a bit kind's IVFFlat index, chosen on the catalog it indexes.

A Hamming IVFFlat query costs what it scans: the entries of the `probes` lists nearest the query (each a
popcount, all of them sorted) and the `factor x k` candidates it re-ranks on their full vectors (a heap
fetch and a cosine each). How many of each a catalog needs for a given recall depends on how its
neighbourhoods fall into the lists: on the serve benchmark's generated 1M catalog (1,000 clusters, 1,000
lists) one probe recalled 0.977 where 10 recalled 0.988 for 2 ms more a query (docs/serving.md), and a
catalog whose neighbours straddle lists needs more. Fixed settings are either wasted on one catalog or
short on another, so they are measured per index, as FAISS's auto-tuning or a search engine's recall
checks do: `tune_ivf_index` samples products of the tenants large enough to be served by the index, takes
each one's exact top 10, and tries settings from the cheapest up until the index's answers (through the
same `similar_products` the API runs) reach `target` recall@10. The choice is recorded on the index
(IvfTuning, as its comment); `ivf_settings` serves it; a rebuild makes a new, untuned index.

What a setting costs is counted, not timed (timings on a shared machine would choose by noise): list
entries scanned plus RERANK_COST x candidates re-ranked. The count leaves out that a tenant with a small share of
a shared index can need more lists than `probes` to find its candidates (the iterative scan reads on): the
recall is measured with that, the cost is not.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

from core.pace import check_duty, rest_after
from db.vector_index import (
    INDEX_STATE,
    IVF_KINDS,
    IvfTuning,
    check_kind,
    check_model_key,
    index_lists,
    index_name,
    write_tuning,
)
from db.vector_queries import EXACT_THRESHOLD_BITS, MAX_CANDIDATES, forget_index_state, similar_products

log = logging.getLogger(__name__)

TUNE_PROBES = (1, 2, 3, 5, 10, 20, 40)
TUNE_FACTORS = (4, 8, 12, 16, 25)
TUNE_TARGET = 0.97  # recall@10 the tuning asks for: the 0.95 goal, with room for a 200-product sample's error
TUNE_SAMPLE = 200
# Below this many entries the untuned settings serve (rerank_factor's 4x and 10 probes recall 0.98 at 100k on the
# serve benchmark's catalog), and a tenant under EXACT_THRESHOLD_BITS items is read exactly anyway.
TUNE_MIN_ENTRIES = 50_000
RETUNE_GROWTH = 2.0  # a tuning is redone when the index's entries have grown or shrunk this much since
# One candidate re-ranked costs about as much as this many list entries scanned (1M binary, backend CPU a query:
# 10 probes against 1 ~9,000 entries more for 1.6-2.4 ms, 0.18-0.27 us each; 16 x 40 candidates against 12 x 40,
# 160 more for ~0.4 ms, ~2.5 us each: docs/serving.md).
RERANK_COST = 10
LIMIT = 10
K = 40  # the index query's k for a limit of 10 (similar_products: max(4 x limit, 40))


@dataclass(frozen=True)
class Trial:
    probes: int
    factor: int
    cost: float
    recall: float | None = None  # None: not measured (a cheaper setting had already met the target)


def setting_cost(probes: int, factor: int, *, entries: int, lists: int) -> float:
    """Entries scanned + RERANK_COST x candidates re-ranked, for one query item."""
    return probes * entries / max(lists, 1) + RERANK_COST * min(factor * K, MAX_CANDIDATES)


def choose(trials: list[Trial], target: float) -> tuple[Trial, bool]:
    """The cheapest measured setting that reached `target` (True), else the one that recalled most (False),
    the cheaper on a tie."""
    measured = [t for t in trials if t.recall is not None]
    if not measured:
        raise ValueError("no setting was measured")
    met = [t for t in measured if t.recall >= target]
    if met:
        return min(met, key=lambda t: (t.cost, t.probes)), True
    return min(measured, key=lambda t: (-t.recall, t.cost)), False


def needs_tuning(session: Session, model_key: str, kind: str, *, min_entries: int = TUNE_MIN_ENTRIES) -> bool:
    """True when the model's valid index of `kind` has at least `min_entries` entries and no tuning, or one made
    when its entries were RETUNE_GROWTH x fewer or more."""
    row = session.execute(INDEX_STATE, {"n": index_name(check_model_key(model_key), kind)}).first()
    if row is None or row.reltuples < max(min_entries, 1):
        return False
    tuning = IvfTuning.parse(row.comment)
    if tuning is None:
        return True
    ratio = row.reltuples / max(tuning.entries, 1)
    return ratio >= RETUNE_GROWTH or ratio <= 1 / RETUNE_GROWTH


def tune_ivf_index(
    sessions: Callable[[], Session],
    model_key: str,
    kind: str,
    *,
    sample: int = TUNE_SAMPLE,
    target: float = TUNE_TARGET,
    seed: int = 0,
    min_tenant_items: int = EXACT_THRESHOLD_BITS,
    probes: tuple[int, ...] = TUNE_PROBES,
    factors: tuple[int, ...] = TUNE_FACTORS,
    duty: float = 1.0,
    parallel: bool = True,
    stop: threading.Event | None = None,
) -> tuple[IvfTuning, list[Trial]] | None:
    """Choose and record the probes and re-rank factor of the model's IVFFlat index of `kind`; the tuning and
    every setting tried, or None when there is nothing to tune (no valid index, no tenant above
    `min_tenant_items` items, or a rebuild replaced the index meanwhile: the next check tunes the new one).

    `sessions`: a session factory (each query runs in a short session of its own, as the API's do).
    Beside live traffic (the workers' check): `duty` < 1 pauses after each query so that querying takes at most
    that share of the wall time, and `parallel=False` keeps each exact answer on one core (no parallel workers).
    `stop` set: the tuning ends before its next query, records nothing and returns None (a worker stopping).
    """
    if check_kind(kind) not in IVF_KINDS:
        raise ValueError(f"{kind} indexes are HNSW: nothing to tune")
    started, pace = time.perf_counter(), _Pace(duty, parallel, stop)
    name = index_name(check_model_key(model_key), kind)
    # One tuning of an index at a time (each worker checks on its own): a session lock of its own name, on a
    # connection in autocommit, so that no transaction (and no snapshot, which a concurrent index build would wait
    # for) stays open for the minutes a tuning takes.
    with sessions() as held:
        conn, lock = held.connection(execution_options={"isolation_level": "AUTOCOMMIT"}), {"n": f"{name}:tuning"}
        if not conn.scalar(text("SELECT pg_try_advisory_lock(hashtext(:n))"), lock):
            log.info("%s is being tuned by another worker", name)
            return None
        try:
            return _tune(sessions, name, model_key, kind, pace, started, sample=sample, target=target, seed=seed,
                         min_tenant_items=min_tenant_items, probes=probes, factors=factors)  # fmt: skip
        except _Stopped:
            log.info("tuning of %s stopped before it ended: nothing recorded", name)
            return None
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(hashtext(:n))"), lock)


def _tune(sessions, name, model_key, kind, pace, started, *, sample, target, seed, min_tenant_items, probes, factors):
    with sessions() as s:
        state = s.execute(INDEX_STATE, {"n": name}).first()
        lists = index_lists(s.connection(), model_key, kind)
        queries = tuning_sample(s, model_key, kind, sample, seed=seed, min_tenant_items=min_tenant_items)
        dim = s.scalar(text("SELECT vector_dims(embedding) FROM items WHERE model = :m LIMIT 1"), {"m": model_key})
        s.commit()
    if state is None or not lists or not queries:
        return None
    entries = max(int(state.reltuples), 1)
    truth = {q: pace(sessions, q, model_key, dim, strategy="exact") for q in queries}
    grid = sorted(
        (Trial(p, f, setting_cost(p, f, entries=entries, lists=lists)) for p in probes for f in factors),
        key=lambda t: (t.cost, t.probes),
    )
    trials: list[Trial] = []
    for trial in grid:
        if any(t.recall is not None and t.recall >= target for t in trials):
            trials.append(trial)  # dearer than a setting that met the target: not measured
            continue
        how = {"strategy": "hnsw", "index_kind": kind, "ivf": (trial.probes, trial.factor)}
        found = [_recall(pace(sessions, q, model_key, dim, **how), truth[q]) for q in queries]
        trials.append(Trial(trial.probes, trial.factor, trial.cost, round(sum(found) / len(found), 4)))
    best, met = choose(trials, target)
    tuning = IvfTuning(
        probes=best.probes,
        factor=best.factor,
        recall=best.recall,
        target=target,
        sample=len(queries),
        entries=entries,
        lists=lists,
        met=met,
        seconds=round(time.perf_counter() - started, 1),
    )
    with sessions() as s, s.begin():
        if not write_tuning(s.connection(), model_key, kind, tuning, state.oid):
            log.info("%s was rebuilt while it was tuned: left to the next check", name)
            return None
    forget_index_state(model_key, kind)  # this process serves the tuning at once (the bench measures right after)
    (log.info if met else log.warning)("%s tuned: %s", name, tuning)
    return tuning, trials


def tuning_sample(
    s: Session, model_key: str, kind: str, n: int, *, seed: int = 0, min_tenant_items: int = EXACT_THRESHOLD_BITS
) -> list[tuple[str, str]]:
    """Up to `n` (tenant, product) pairs, seeded, of the tenants with more than `min_tenant_items` in-stock items
    of the model (smaller ones are read exactly, not through the index); for the codes kind, products with codes."""
    coded = "AND i.code IS NOT NULL" if kind == "codes" else ""
    rows = s.execute(
        text(f"""
            WITH big AS (
                SELECT tenant_id FROM items WHERE model = :m AND in_stock GROUP BY tenant_id HAVING count(*) > :min
            )
            SELECT p.tenant_id, p.external_id FROM products p JOIN big USING (tenant_id)
            WHERE NOT p.deleted AND p.in_stock
              AND EXISTS (SELECT 1 FROM items i WHERE i.product_id = p.id AND i.model = :m AND i.in_stock {coded})
            ORDER BY hashtext(:seed || ':' || p.id), p.id
            LIMIT :n
        """),
        {"m": model_key, "min": min_tenant_items, "seed": str(seed), "n": n},
    ).all()
    return [(r.tenant_id, r.external_id) for r in rows]


class _Stopped(Exception):
    """The tuning's stop event was set."""


class _Pace:
    """Runs one `similar_products` call at a time for the tuning: (tenant, product) -> the ids served."""

    def __init__(self, duty: float, parallel: bool, stop: threading.Event | None = None):
        self.duty, self.parallel, self.stop = check_duty(duty), parallel, stop or threading.Event()

    def __call__(self, sessions, query: tuple[str, str], model_key: str, dim: int, **how) -> list[str]:
        if self.stop.is_set():
            raise _Stopped
        tenant, pid = query
        started = time.perf_counter()
        with sessions() as s:
            if not self.parallel:
                s.execute(text("SELECT set_config('max_parallel_workers_per_gather', '0', true)"))
            r = similar_products(s, tenant_id=tenant, external_id=pid, model_key=model_key, dim=dim, limit=LIMIT, **how)
            s.commit()  # not a rollback: that would drop the connection's prepared statements
        if self.duty < 1:
            self.stop.wait(rest_after(time.perf_counter() - started, self.duty))
        return [n.product_id for n in r.neighbours or []]


def _recall(served: list[str], exact: list[str]) -> float:
    return len(set(served[:LIMIT]) & set(exact)) / max(len(exact), 1)
