"""create_app(settings): the FastAPI application, with its resources opened in the lifespan."""

from __future__ import annotations

import gc
import logging
import time
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from core import __version__
from core.settings import Settings
from db.cors_origins import tenants_by_origin
from db.session import create_db_engine, session_factory
from recommender import errors, metrics
from recommender.arms import BaselineArm, VisualArm
from recommender.cors import TenantCORSMiddleware
from recommender.ratelimit import RateLimitMiddleware, document_rate_limits
from recommender.routes import admin, catalog, credentials, events, health, models, recommendations, search, shopify
from recommender.training_jobs import LocalProcesses
from recommender.ttl_cache import TTLCache
from streams.buffered_sender import BufferedSender
from streams.detectors import TenantDetectors
from streams.image_fetch import ImageFetcher
from streams.producer import EventProducer
from streams.topics import INTERACTIONS
from vision.components import build_detector, build_embedder

log = logging.getLogger(__name__)


class LatencyMiddleware:
    """Request latency per route into Prometheus, as plain ASGI.

    Not `@app.middleware("http")`: Starlette's BaseHTTPMiddleware wraps every response in a
    stream and an extra task, a measurable share of the API's CPU per storefront request.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500  # an exception before the response started is what the server answers with

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")  # set by the router on this same scope
            if route is not None:  # unknown paths would make unbounded label values
                metrics.REQUEST_LATENCY.labels(route.path, scope["method"], str(status)).observe(
                    time.perf_counter() - start
                )


async def metrics_page(request: Request) -> Response:
    """The process's Prometheus metrics, answered in place (a mounted app would 307 /metrics to /metrics/)."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def create_app(settings: Settings) -> FastAPI:
    """Build the API for resolved settings (broker and database addresses filled in)."""
    if not settings.kafka_bootstrap or not settings.database_url:
        raise ValueError("create_app needs resolved settings (call settings.resolved())")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Sized for the threadpool that runs sync handlers (anyio's default: 40 threads).
        app.state.engine = create_db_engine(settings.database_url, pool_size=20, max_overflow=20)
        app.state.sessions = session_factory(app.state.engine)
        # At most this many recommendation requests query Postgres at once: on a few cores, 40
        # concurrent kNN queries only thrash (max throughput fell from ~220 to ~150 requests/s).
        app.state.serve_limiter = anyio.CapacityLimiter(settings.serve_concurrency)
        app.state.producer = EventProducer(
            settings.kafka_bootstrap, client_id=f"{settings.app_id}-api", ack_timeout_s=settings.kafka_ack_timeout_s
        )
        await app.state.producer.start()
        app.state.exposures = BufferedSender(
            app.state.producer, settings.topic(INTERACTIONS.name), linger_s=settings.exposure_linger_s
        )
        app.state.exposures.start()
        app.state.fetcher = ImageFetcher(
            timeout_s=settings.fetch_timeout_s,
            max_bytes=settings.max_image_bytes,
            allow_private=settings.fetch_allow_private,
            allow_hosts=settings.fetch_allowed_hosts,
        )
        log.info("api ready: kafka %s, embedder %s", settings.kafka_bootstrap, app.state.embedder.model_key)
        # Everything loaded so far lives as long as the process: out of the collector's way, a full
        # collection no longer walks ~130k start-up objects. Measured under 100 users: full
        # collections of 90-130 ms, each stalling every request in flight (a p99 spike), became
        # ~25 ms. Unfrozen at shutdown so a process that builds many apps (tests) frees them.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()
            await app.state.exposures.close()
            await app.state.fetcher.aclose()
            await app.state.producer.stop()
            app.state.engine.dispose()

    # max_body_size: a bigger body is answered 413 before it is read (Content-Length) or as soon as it
    # passes the cap (chunked), before authentication; the webhooks and image search raise it for themselves.
    app = FastAPI(
        title="vitrine",
        version=__version__,
        lifespan=lifespan,
        description="Visual recommendations with built-in A/B experiments.",
        max_body_size=settings.max_request_body_bytes,
    )
    app.add_exception_handler(RequestValidationError, errors.request_invalid)
    for exc in errors.DATABASE_DOWN:
        app.add_exception_handler(exc, errors.database_unavailable)
    app.add_exception_handler(405, errors.method_not_allowed)
    app.state.settings = settings
    # Created, not loaded: the API needs the model's key and dimension; weights load on first use.
    app.state.embedder = build_embedder(settings)
    app.state.detector = build_detector(settings)
    # Search by image uses the tenant's active student detector when it has one (recommender/detectors.py).
    app.state.detectors = TenantDetectors(
        app.state.detector,
        cache_dir=settings.data_dir / "models",
        ttl_s=settings.lookup_cache_ttl_s,
        embedder=app.state.embedder,
    )
    # Training runs in processes of its own (`vitrine model train`); tests replace this edge.
    app.state.training_processes = LocalProcesses()
    # Per-process lookup caches of the storefront path (recommender/ttl_cache.py says what and why).
    app.state.tenant_cache = TTLCache("tenant", settings.lookup_cache_ttl_s)
    app.state.experiment_cache = TTLCache("experiment", settings.lookup_cache_ttl_s)
    app.state.model_cache = TTLCache("ready_models", settings.lookup_cache_ttl_s)  # per tenant, for visual@<key>
    baseline = BaselineArm(
        half_life_s=settings.popularity_half_life_s, lists=TTLCache("popular", settings.popularity_cache_ttl_s)
    )
    app.state.arms = {
        "baseline": baseline,
        "visual": VisualArm(
            model_key=app.state.embedder.model_key,
            dim=app.state.embedder.dim,
            fallback=baseline,
            ef_search=settings.hnsw_ef_search,
            strategies=TTLCache("knn_strategy", settings.lookup_cache_ttl_s),
            index_kind=settings.index_kind,
        ),
    }
    app.include_router(catalog.router)
    app.include_router(shopify.router)
    app.include_router(recommendations.router)
    app.include_router(events.router)
    # The photo itself plus the multipart framing and the form fields around it.
    app.include_router(search.router, max_body_size=settings.max_image_bytes + 64 * 1024)
    # Without a text tower it answers 501 saying which embedder to set; the schema promises only what works.
    app.include_router(search.text_router, include_in_schema=app.state.embedder.supports_text)
    app.include_router(admin.router)
    app.include_router(credentials.router)
    app.include_router(models.router)
    app.include_router(health.router)
    # Both spellings answer 200: Prometheus does not follow redirects by default, older configs say /metrics/.
    for path in ("/metrics", "/metrics/"):
        app.add_route(path, metrics_page, methods=["GET"], include_in_schema=False)

    app.add_middleware(
        RateLimitMiddleware,
        storefront=settings.rate_limit_storefront,
        admin=settings.rate_limit_admin,
        storage_uri=settings.rate_limit_storage,
    )
    if settings.rate_limit_storefront.strip() or settings.rate_limit_admin.strip():
        document_rate_limits(app)

    def origins_by_tenant() -> dict[str, frozenset[str]]:
        with app.state.sessions() as session:
            table = tenants_by_origin(session)
            session.commit()  # as the tenant lookup (recommender/deps.py): keeps the connection's prepared statements
            return table

    # Outside the rate limit: a 429 carries CORS headers too, so a storefront's script can read its Retry-After.
    app.add_middleware(
        TenantCORSMiddleware,
        load_table=origins_by_tenant,
        cache=TTLCache("cors_origins", settings.lookup_cache_ttl_s),
    )
    app.add_middleware(LatencyMiddleware)

    return app
