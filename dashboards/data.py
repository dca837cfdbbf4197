"""Every read the dashboards make, cached: experiments through `db.experiment_stats` and snapshots, the rest `db/`.

Cached functions take the database URL (and broker address) as their first argument so that
two dashboards, or two tests in one process, never share entries across databases. Nothing
here computes a statistic: reports, series and power figures come from `experiments/`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import streamlit as st
from sqlalchemy import text
from sqlalchemy.engine import Engine

from core.settings import Settings
from db.experiment_snapshots import load_snapshot, snapshot_or_compute
from db.experiment_stats import analyze
from db.session import create_db_engine, session_factory
from experiments.analysis import ReportOptions
from experiments.metrics import METRICS, metric_power
from experiments.report import daily_series
from experiments.sequential import DEFAULT_TUNING_N
from experiments.snapshots import Snapshot, snapshot_report

# Experiment statistics come from a stored snapshot (db/experiment_snapshots.py) or, when none is fresh,
# from aggregating millions of events; in front of both, a minute in this process's cache.
REPORT_TTL_S = 60
LIST_TTL_S = 30
HEALTH_TTL_S = 30


def get_settings() -> Settings:
    """The dashboard's settings: `vitrine dashboard` passes the resolved ones through VITRINE_* env."""
    return Settings().resolved()


def raw_settings() -> Settings:
    """The settings without resolving the stack (the sign-in knobs need no database)."""
    return Settings()


@st.cache_resource(show_spinner=False)
def engine(database_url: str) -> Engine:
    """One connection pool per database for the whole server."""
    return create_db_engine(database_url)


def _session(database_url: str):
    return session_factory(engine(database_url))()


# --- tenants and credentials -------------------------------------------------------------------------


def tenant_for_admin_key(database_url: str, key: str) -> str | None:
    """The tenant whose admin key this is (never cached: a revoked key must stop working at once)."""
    from db.tenants import tenant_by_admin_key

    with _session(database_url) as session:
        tenant = tenant_by_admin_key(session, key)
        return tenant.id if tenant else None


def admin_key_digests(database_url: str, tenant_id: str) -> list[str]:
    """The stored digests of the tenant's admin keys in force: the current one and one in its grace period."""
    from sqlalchemy import select

    from db.models import PreviousKey, Tenant

    with _session(database_url) as session:
        current = session.scalar(select(Tenant.admin_key_hash).where(Tenant.id == tenant_id))
        previous = session.scalars(
            select(PreviousKey.key_hash).where(
                PreviousKey.tenant_id == tenant_id,
                PreviousKey.kind == "admin_key",
                PreviousKey.expires_at > datetime.now(UTC),
            )
        )
        return ([current] if current else []) + list(previous)


@st.cache_data(ttl=LIST_TTL_S, show_spinner=False)
def tenant_ids(database_url: str) -> list[str]:
    """Every tenant id, sorted."""
    from sqlalchemy import select

    from db.models import Tenant

    with _session(database_url) as session:
        return list(session.scalars(select(Tenant.id).order_by(Tenant.id)))


# --- experiments -------------------------------------------------------------------------------------


@st.cache_data(ttl=LIST_TTL_S, show_spinner=False)
def experiments(database_url: str, tenant_id: str) -> list[dict[str, Any]]:
    """The tenant's experiments (key, status, placement, arms, dates), oldest first."""
    from db.experiments import list_experiments

    with _session(database_url) as session:
        return [
            {
                "key": e.key,
                "status": e.status,
                "placement": e.placement,
                "arms": e.arms,
                "primary_metric": e.primary_metric,
                "guardrails": e.guardrails,
                "traffic_fraction": e.traffic_fraction,
                "planned_sample_size": e.planned_sample_size,
                "started_at": e.started_at,
                "stopped_at": e.stopped_at,
            }
            for e in list_experiments(session, tenant_id)
        ]


def change_status(database_url: str, tenant_id: str, key: str, action: str) -> str | None:
    """Start or stop the tenant's experiment, as the admin API does (`db.experiments`); the refusal, or None."""
    from db.experiments import ExperimentError, start_experiment, stop_experiment

    if action not in ("start", "stop"):
        raise ValueError(f"unknown action {action!r}")
    with _session(database_url) as session, session.begin():
        try:
            (start_experiment if action == "start" else stop_experiment)(session, tenant_id, key)
        except ExperimentError as exc:
            return str(exc)
    # The list shows the new status at once; a snapshot of the old definition is no longer valid anyway.
    experiments.clear()
    results.clear()
    summary.clear()
    return None


@st.cache_data(ttl=LIST_TTL_S, show_spinner=False)
def tenant_currency(database_url: str, tenant_id: str) -> str | None:
    """The currency most of the tenant's products are priced in (revenue is shown in it), None without any."""
    with _session(database_url) as session:
        return session.scalar(
            text("""
            SELECT currency FROM products WHERE tenant_id = :t AND currency IS NOT NULL AND NOT deleted
            GROUP BY currency ORDER BY count(*) DESC, currency LIMIT 1
        """),
            {"t": tenant_id},
        )


@st.cache_data(ttl=REPORT_TTL_S, show_spinner=False)
def served(database_url: str, tenant_id: str, key: str) -> dict[str, dict[str | None, int]]:
    """Exposures per arm and the model that served them (`db.experiment_models.served_models`)."""
    from db.experiment_models import served_models

    with engine(database_url).connect() as conn:
        return served_models(conn, tenant_id, key)


@dataclass(frozen=True)
class Results:
    """One experiment's statistics as of one moment: every figure of a page is built from the same one."""

    database_url: str
    tenant_id: str
    key: str
    snapshot: Snapshot
    live: bool  # computed for this page view (and stored), not read from a stored snapshot

    @property
    def ident(self) -> tuple[str, str, str, str]:
        """What the derived caches are keyed on: a recomputation gives new entries."""
        return (self.database_url, self.tenant_id, self.key, self.snapshot.computed_at.isoformat())


@st.cache_data(ttl=REPORT_TTL_S, show_spinner="Loading the experiment's statistics…")
def results(database_url: str, tenant_id: str, key: str, max_age_s: float) -> Results:
    """The stored snapshot when younger than `max_age_s`, else computed now and stored (`db.experiment_snapshots`)."""
    with engine(database_url).begin() as conn:
        snapshot, computed = snapshot_or_compute(conn, tenant_id, key, max_age_s)
    return Results(database_url, tenant_id, key, snapshot, computed)


def recompute(database_url: str, tenant_id: str, key: str) -> Results:
    """Compute the statistics now, replace the stored snapshot, and drop the cached ones."""
    with engine(database_url).begin() as conn:
        snapshot, _ = snapshot_or_compute(conn, tenant_id, key, 0, force=True)
    results.clear()
    return Results(database_url, tenant_id, key, snapshot, True)


@st.cache_data(ttl=REPORT_TTL_S, show_spinner="Analysing the experiment…")
def summary(
    database_url: str, tenant_id: str, key: str, max_age_s: float
) -> tuple[dict[str, Any] | None, datetime, bool]:
    """(default report, as of, live) for a list of experiments: from the snapshot when valid, else `analyze`.

    Without a snapshot this is the totals alone (no per-day series: seconds at 10M events), so nothing is stored.
    """
    with engine(database_url).connect() as conn:
        snapshot = load_snapshot(conn, tenant_id, key, max_age_s)
        if snapshot is not None:
            return snapshot_report(snapshot, tenant_id=tenant_id), snapshot.computed_at, False
        now = datetime.now(UTC)
        return analyze(conn, tenant_id, key, ReportOptions(), now=now), now, True


def report(
    res: Results, sequential: bool = False, correction: str = "holm", alpha: float = 0.05
) -> dict[str, Any] | None:
    """What `db.experiment_stats.analyze` gives for these options, on `res` (None: no experiment, no exposures)."""
    return _report(res, res.ident, sequential, correction, alpha)


@st.cache_data(ttl=REPORT_TTL_S, show_spinner=False)
def _report(_res: Results, ident: tuple, sequential: bool, correction: str, alpha: float) -> dict[str, Any] | None:
    options = ReportOptions(sequential=sequential, correction=correction, alpha=alpha)
    return snapshot_report(_res.snapshot, options, tenant_id=_res.tenant_id)


def daily(res: Results, metric: str, sequential: bool = True, alpha: float = 0.05) -> dict[str, Any]:
    """Per day: the cumulative lift series (`experiments.report.daily_series`) and cumulative counts per arm."""
    return _daily(res, res.ident, metric, sequential, alpha)


@st.cache_data(ttl=REPORT_TTL_S, show_spinner=False)
def _daily(_res: Results, ident: tuple, metric: str, sequential: bool, alpha: float) -> dict[str, Any]:
    snapshot = _res.snapshot
    # The same tuning parameter as `analyze`: the planned sample size, else the library default.
    tuning_n = snapshot.planned_sample_size or DEFAULT_TUNING_N
    series = daily_series(
        snapshot.definition, snapshot.stats, metric, alpha=alpha, sequential=sequential, tuning_n=tuning_n
    )
    counts = [
        {"day": d.day.isoformat(), "arm": d.stats.arm, "users": d.stats.users, "exposures": d.stats.exposures}
        for d in snapshot.stats.daily
    ]
    return {"series": series, "counts": counts, "tuning_n": tuning_n}


def power(
    res: Results,
    metric: str,
    treatment: str,
    control: str,
    alpha: float,
    power_level: float,
    target_relative_mde: float,
    users_per_day: float,
) -> dict[str, Any]:
    """`experiments.metrics.metric_power` on the sufficient statistics of `res`, as a dict."""
    return _power(res, res.ident, metric, treatment, control, alpha, power_level, target_relative_mde, users_per_day)


@st.cache_data(ttl=REPORT_TTL_S, show_spinner=False)
def _power(
    _res: Results,
    ident: tuple,
    metric: str,
    treatment: str,
    control: str,
    alpha: float,
    power_level: float,
    target_relative_mde: float,
    users_per_day: float,
) -> dict[str, Any]:
    stats = _res.snapshot.stats
    result = metric_power(
        METRICS[metric],
        stats.arm(control),
        stats.arm(treatment),
        alpha,
        power_level,
        target_relative_mde,
        users_per_day,
    )
    return result.to_dict()


def default_users_per_day(control_users: int, days_elapsed: float | None) -> float:
    """The power calculator's default traffic: control users per day so far, over at least one day (an
    experiment minutes old would otherwise be extrapolated to hundreds of thousands of users a day)."""
    return round(control_users / max(days_elapsed or 0.0, 1.0), 1)


# --- catalog -----------------------------------------------------------------------------------------


@st.cache_data(ttl=LIST_TTL_S, show_spinner=False)
def search_products(database_url: str, tenant_id: str, query: str, limit: int = 50) -> list[dict[str, Any]]:
    """Products whose id equals, or whose id/title contains, `query` (exact id first); newest first."""
    like = "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    with _session(database_url) as session:
        rows = (
            session.execute(
                text("""
            SELECT external_id, title, category, price::float AS price, in_stock, deleted, version, indexed_at
            FROM products
            WHERE tenant_id = :t AND (:q = '' OR external_id = :q OR external_id ILIKE :like OR title ILIKE :like)
            ORDER BY (external_id = :q) DESC, updated_at DESC, external_id
            LIMIT :limit
        """),
                {"t": tenant_id, "q": query, "like": like, "limit": limit},
            )
            .mappings()
            .all()
        )
        return [dict(r) for r in rows]


@st.cache_data(ttl=LIST_TTL_S, show_spinner=False)
def product_images(database_url: str, tenant_id: str, external_id: str) -> list[dict[str, Any]]:
    """The product's images (url, size, status, failure reason, stored thumbnail or None) with their items.

    Each detected item comes once, with `models`: the models that have a vector of it (every deployed model
    stores its own row of each item, same kind, box and label).
    """
    with _session(database_url) as session:
        images = (
            session.execute(
                text("""
            SELECT pi.id, pi.url, pi.position, pi.width, pi.height, pi.status, pi.failure_reason, pi.thumbnail
            FROM product_images pi JOIN products p ON p.id = pi.product_id
            WHERE p.tenant_id = :t AND p.external_id = :pid ORDER BY pi.position
        """),
                {"t": tenant_id, "pid": external_id},
            )
            .mappings()
            .all()
        )
        items = (
            session.execute(
                text("""
            SELECT it.image_id, it.kind, it.box, it.label, max(it.score) AS score,
                   array_agg(it.model ORDER BY it.model) AS models
            FROM items it JOIN products p ON p.id = it.product_id
            WHERE p.tenant_id = :t AND p.external_id = :pid
            GROUP BY it.image_id, it.kind, it.box, it.label
            ORDER BY it.image_id, score DESC, it.label
        """),
                {"t": tenant_id, "pid": external_id},
            )
            .mappings()
            .all()
        )
    out = []
    for img in images:
        d = dict(img)
        d["thumbnail"] = None if d["thumbnail"] is None else bytes(d["thumbnail"])
        d["items"] = [{k: v for k, v in it.items() if k != "image_id"} for it in items if it["image_id"] == img["id"]]
        out.append(d)
    return out


@st.cache_data(ttl=LIST_TTL_S, show_spinner=False)
def product_thumbnails(database_url: str, tenant_id: str, external_ids: tuple[str, ...]) -> dict[str, bytes | None]:
    """Per product of `external_ids` (of this tenant): the thumbnail of its first ok image, for neighbour grids.

    One query for a whole page. An ok image stored before thumbnails existed (migration 0012) gives way to a
    later one that has a thumbnail; None where none of its ok images has one. A product with no ok image, or
    not of this tenant, is left out.
    """
    if not external_ids:
        return {}
    with _session(database_url) as session:
        rows = session.execute(
            text("""
            SELECT DISTINCT ON (p.external_id) p.external_id, pi.thumbnail
            FROM products p JOIN product_images pi ON pi.product_id = p.id AND pi.status = 'ok'
            WHERE p.tenant_id = :t AND p.external_id = ANY(:ids)
            ORDER BY p.external_id, pi.thumbnail IS NULL, pi.position
        """),
            {"t": tenant_id, "ids": list(external_ids)},
        ).all()
    return {r.external_id: None if r.thumbnail is None else bytes(r.thumbnail) for r in rows}


def embedder_identity(settings: Settings) -> tuple[str, int]:
    """(model key, dim) of the configured embedder; creating it loads no weights."""
    from vision.components import build_embedder

    embedder = build_embedder(settings)
    return embedder.model_key, embedder.dim


@st.cache_data(ttl=LIST_TTL_S, show_spinner="Finding neighbours…")
def neighbours(
    database_url: str, tenant_id: str, external_id: str, model_key: str, dim: int, half_life_s: float, limit: int = 10
) -> dict[str, Any]:
    """The visual arm's kNN list (`db.vector_queries.similar_products`) and the baseline arm's list."""
    from db.vector_queries import similar_products
    from recommender.arms.base import ArmRequest
    from recommender.arms.baseline import BaselineArm

    with _session(database_url) as session, session.begin():
        visual = similar_products(
            session, tenant_id=tenant_id, external_id=external_id, model_key=model_key, dim=dim, limit=limit
        )
        baseline = BaselineArm(half_life_s=half_life_s).recommend(
            session, ArmRequest(tenant_id=tenant_id, product_id=external_id, limit=limit)
        )
    return {
        "visual": None if visual.neighbours is None else [asdict(n) | {"score": n.score} for n in visual.neighbours],
        "strategy": visual.strategy,
        # The baseline's Neighbour.score is its decayed popularity, not a similarity.
        "baseline": None if baseline is None else [asdict(n) | {"score": n.score} for n in baseline.items],
    }


# --- pipeline health ---------------------------------------------------------------------------------


@st.cache_data(ttl=HEALTH_TTL_S, show_spinner="Reading pipeline health…")
def catalog_health(database_url: str, tenant_id: str | None) -> list[dict[str, Any]]:
    """Per tenant: what `vitrine status` shows (products, images by status, top failure reasons, items)."""
    from sqlalchemy.exc import OperationalError

    from db.status import UnknownTenant, catalog_status

    try:
        with _session(database_url) as session:
            return catalog_status(session, tenant_id)
    except (OperationalError, UnknownTenant) as exc:  # the page words both as one error line
        raise RuntimeError("the database is unreachable or the tenant does not exist") from exc


@st.cache_data(ttl=HEALTH_TTL_S, show_spinner="Reading Kafka…")
def kafka_health(database_url: str, kafka_bootstrap: str, topic_prefix: str) -> dict[str, Any]:
    """Worker lag and dead letters per tenant, as `vitrine status` reads them (never raises)."""
    from streams.status import kafka_status

    return kafka_status(get_settings())


@st.cache_data(ttl=HEALTH_TTL_S, show_spinner=False)
def events_in(database_url: str, tenant_id: str) -> dict[str, int]:
    """Catalog events accepted by the API (receipts) and interaction events stored, by type."""
    with _session(database_url) as session:
        receipts = session.scalar(
            text("SELECT count(*) FROM event_receipts WHERE tenant_id = :t AND acked_at IS NOT NULL"), {"t": tenant_id}
        )
        by_type = dict(
            session.execute(
                text("SELECT type, count(*) FROM interaction_events WHERE tenant_id = :t GROUP BY type"),
                {"t": tenant_id},
            ).all()
        )
    return {"catalog_events": int(receipts or 0), **{f"interactions_{k}": int(v) for k, v in by_type.items()}}


@st.cache_data(ttl=HEALTH_TTL_S, show_spinner=False)
def ingestion_rate(database_url: str, tenant_id: str, hours: int = 48) -> list[dict[str, Any]]:
    """Per hour of the last `hours`: products indexed, images failed, interaction events received."""
    with _session(database_url) as session:
        rows = (
            session.execute(
                text("""
            WITH since AS (SELECT now() - make_interval(hours => :h) AS t0),
            indexed AS (
                SELECT date_trunc('hour', indexed_at) AS hour, count(*) AS n FROM products, since
                WHERE tenant_id = :t AND indexed_at >= since.t0 GROUP BY 1),
            failed AS (
                SELECT date_trunc('hour', updated_at) AS hour, count(*) AS n FROM product_images, since
                WHERE tenant_id = :t AND status = 'failed' AND updated_at >= since.t0 GROUP BY 1),
            interactions AS (
                SELECT date_trunc('hour', received_at) AS hour, count(*) AS n FROM interaction_events, since
                WHERE tenant_id = :t AND received_at >= since.t0 GROUP BY 1)
            SELECT hour, 'products indexed' AS series, n FROM indexed
            UNION ALL SELECT hour, 'images failed', n FROM failed
            UNION ALL SELECT hour, 'interaction events', n FROM interactions
            ORDER BY 1, 2
        """),
                {"t": tenant_id, "h": hours},
            )
            .mappings()
            .all()
        )
    return [dict(r) for r in rows]


# --- outage health -----------------------------------------------------------------------------------

OUTAGE_TTL_S = 5  # two cheap probes: fresher than the counts above


@st.cache_resource(show_spinner=False)
def _first_seen_down() -> dict[tuple[str, str], float]:
    """(dependency, address) -> when this dashboard server first found it unreachable, for the outage going on."""
    return {}


def _since(dependency: str, address: str, ok: bool) -> float | None:
    seen = _first_seen_down()
    if ok:
        seen.pop((dependency, address), None)
        return None
    return seen.setdefault((dependency, address), datetime.now(UTC).timestamp())


@st.cache_data(ttl=OUTAGE_TTL_S, show_spinner=False)
def outage_health(database_url: str, kafka_bootstrap: str, worker_web_port: int) -> dict[str, Any]:
    """Postgres and Kafka: reachable, or unreachable since when; and whether the worker is waiting for the database.

    The probes are those of the API's /healthz (`recommender.health`: `SELECT 1` on the pool, a TCP
    connect to a bootstrap server). A database outage dates from the worker's own clock when its
    /metrics/ page reports one (`streams.status.worker_health`), else from the first probe of this
    dashboard server that failed; a broker outage from that first failed probe.
    """
    import asyncio

    from recommender.health import broker_state, database_state
    from streams.status import worker_health

    database = asyncio.run(database_state(engine(database_url)))
    broker = asyncio.run(broker_state(kafka_bootstrap))
    worker = worker_health(get_settings().model_copy(update={"worker_web_port": worker_web_port}))
    waiting = worker["database_down_since"]
    worker_since = datetime.fromisoformat(waiting).timestamp() if waiting else None
    first_seen = _since("database", database_url, database["ok"])
    return {
        "database": {
            **database,
            "since": None if database["ok"] else (worker_since or first_seen),
            "clock": "worker" if worker_since else "dashboard",
        },
        "broker": {**broker, "since": _since("broker", kafka_bootstrap, broker["ok"]), "clock": "dashboard"},
        "worker_waiting_since": worker_since,
    }
