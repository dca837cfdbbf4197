"""create_app(settings): the FastAPI application, with its resources opened in the lifespan."""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI

from db.session import create_db_engine, session_factory
from prometheus_client import make_asgi_app

from recommender import metrics
from recommender.arms import BaselineArm, VisualArm
from recommender.routes import admin, catalog, events, recommendations, search, shopify
from streams.buffered_sender import BufferedSender
from streams.image_fetch import ImageFetcher
from streams.topics import INTERACTIONS
from streams.producer import EventProducer
from vitrine import __version__
from vitrine.components import build_detector, build_embedder
from vitrine.settings import Settings

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> FastAPI:
    """Build the API for resolved settings (broker and database addresses filled in)."""
    if not settings.kafka_bootstrap or not settings.database_url:
        raise ValueError("create_app needs resolved settings (call settings.resolved())")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Sized for the threadpool that runs sync handlers (anyio's default: 40 threads).
        app.state.engine = create_db_engine(settings.database_url, pool_size=20, max_overflow=20)
        app.state.sessions = session_factory(app.state.engine)
        app.state.producer = EventProducer(settings.kafka_bootstrap, client_id=f"{settings.app_id}-api",
                                           ack_timeout_s=settings.kafka_ack_timeout_s)
        await app.state.producer.start()
        app.state.exposures = BufferedSender(app.state.producer, settings.topic(INTERACTIONS.name))
        app.state.exposures.start()
        app.state.fetcher = ImageFetcher(timeout_s=settings.fetch_timeout_s, max_bytes=settings.max_image_bytes,
                                         allow_private=settings.fetch_allow_private,
                                         allow_hosts=settings.fetch_allowed_hosts)
        log.info("api ready: kafka %s, embedder %s", settings.kafka_bootstrap, app.state.embedder.model_key)
        try:
            yield
        finally:
            await app.state.exposures.close()
            await app.state.fetcher.aclose()
            await app.state.producer.stop()
            app.state.engine.dispose()

    app = FastAPI(title="vitrine", version=__version__, lifespan=lifespan,
                  description="Visual recommendations with built-in A/B experiments.")
    app.state.settings = settings
    # Created, not loaded: the API needs the model's key and dimension; weights load on first use.
    app.state.embedder = build_embedder(settings)
    app.state.detector = build_detector(settings)
    baseline = BaselineArm(half_life_s=settings.popularity_half_life_s)
    app.state.arms = {"baseline": baseline, "visual": VisualArm(
        model_key=app.state.embedder.model_key, dim=app.state.embedder.dim, fallback=baseline,
        ef_search=settings.hnsw_ef_search)}
    app.include_router(catalog.router)
    app.include_router(shopify.router)
    app.include_router(recommendations.router)
    app.include_router(events.router)
    app.include_router(search.router)
    app.include_router(admin.router)
    app.mount("/metrics", make_asgi_app())

    @app.middleware("http")
    async def observe_latency(request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        if route is not None:  # unknown paths would make unbounded label values
            metrics.REQUEST_LATENCY.labels(route.path, request.method).observe(time.perf_counter() - start)
        return response

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict:
        return {"status": "ok", "version": __version__}

    return app

