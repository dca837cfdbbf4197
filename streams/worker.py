"""create_worker(settings): the faust app, its ingest and interactions agents.

Delivery is at least once (Tansu has no transactions): faust acknowledges a batch only after the
agent has applied it, and every write is idempotent (see db/catalog.py), so a redelivery after a
crash changes nothing. A database outage is a wait, not a failure (streams/outage.py): the batch is
retried for as long as the outage lasts and the partition does not move on past it. An event that
fails for its own sake fails alone: after its retries it is tried by itself, and only if it fails
by itself does it go to the dead-letter topic, with the topic it came from (a replay sends it back
there), its original payload, its own error (never its batch's) and the attempt count; then the
partition moves on.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
import time

import faust
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    retry_if_result,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from core.contracts import CatalogEvent, DeadLetter, InteractionEvent, ProductIndexed, utcnow
from core.machine import usable_cpus
from core.settings import Settings
from db.interactions import known_tenants, record_interactions
from db.session import create_db_engine, session_factory
from db.vector_index import ensure_vector_index, set_build_memory
from streams import metrics
from streams.detectors import TenantDetectors
from streams.faust_transport import App
from streams.image_fetch import ImageFetcher
from streams.ingest import Indexer, ItemPolicy
from streams.lag import consumer_lag
from streams.outage import DATABASE, DatabaseHealth, failure_reason, is_outage, is_transient, wait_out_outages
from streams.reembed import SETTLE_MARGIN_S, DeployedHeads, ModelCache, Reembedder
from streams.topics import DEAD_LETTER, INTERACTIONS, PRODUCT_EVENTS, PRODUCT_INDEXED
from streams.tower_images import ImageCrops
from vision.components import build_detector, build_embedder

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 4
# 0.5-1, 1.5-2 and 4.5-5 s between the attempts (6.5-8 s in all; fixed 0.5, 2 and 5 s before): the random
# part keeps the workers that one outage failed together from all retrying at the same instant.
BACKOFF = wait_exponential(multiplier=0.5, exp_base=3, max=5) + wait_random(0, 0.5)
# Up to 256 events per batch: a no-op event (a re-sent, unchanged product) costs ~1 ms, so the
# per-batch costs (state query, transaction, commit) must be shared by many. The models still see
# chunks of ~32 images (Indexer.chunk_images) and notices go out per chunk, so a large batch adds
# no latency. The wait is short: under load the backlog fills batches anyway, and when the stream
# is idle a long wait only delays the last events (0.25 s cost a 300-product re-send 25 %).
BATCH_MAX = 256
BATCH_WITHIN_S = 0.05


class Worker(faust.Worker):
    """faust's worker with a bounded shutdown: it exits `stop_timeout_s` after a stop began, finished or not.

    During a broker outage faust's graceful stop waits on commits, flushes and rebalances that cannot
    happen (measured: still running 60 s after SIGTERM; docs/reliability.md), and an orchestrator
    kills it anyway. Exiting is safe: offsets not committed mean redelivery (at-least-once), and
    every write is idempotent.
    """

    def __init__(self, app: faust.App, *args, stop_timeout_s: float = 8.0, **kwargs):
        super().__init__(app, *args, **kwargs)
        self.stop_timeout_s = stop_timeout_s

    async def on_stop(self) -> None:
        """Arm the watchdog, then stop as faust does."""
        watchdog = threading.Timer(self.stop_timeout_s, _exit_unfinished, (self.stop_timeout_s,))
        watchdog.daemon = True  # a stop that finishes in time exits the process without waiting for it
        watchdog.start()
        await super().on_stop()


def _exit_unfinished(timeout_s: float) -> None:
    log.error("worker did not stop within %.0fs; exiting now (uncommitted events will be redelivered)", timeout_s)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(1)


def create_worker(settings: Settings) -> faust.App:
    """The faust app for resolved settings; run it with `Worker(app).execute_from_commandline()`."""
    app = App(  # faust.App with a short fetch wait: see streams/faust_transport.py
        settings.app_id,
        broker=",".join(f"kafka://{h}" for h in settings.kafka_bootstrap.split(",")),
        store="memory://",
        datadir=str(settings.data_dir / "faust"),  # faust's default is ./<app_id>-data in the cwd
        value_serializer="raw",
        key_serializer="raw",
        # Short sessions make a (re)joining worker ready in ~6 s instead of 30-108 s (PLATFORM.md).
        broker_session_timeout=6,
        broker_heartbeat_interval=1,
        broker_commit_every=BATCH_MAX,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        topic_replication_factor=1,
        topic_partitions=settings.topic_partitions,
        web_enabled=True,
        web_host=settings.worker_web_host,
        web_port=settings.worker_web_port,
        producer_acks=-1,
    )
    events_topic = app.topic(settings.topic(PRODUCT_EVENTS.name), value_serializer="raw", key_serializer="raw")
    dead_letters = app.topic(settings.topic(DEAD_LETTER.name), value_serializer="raw", key_serializer="raw")
    indexed = app.topic(settings.topic(PRODUCT_INDEXED.name), value_serializer="raw", key_serializer="raw")

    streams = model_streams(settings)
    # Several single-threaded inference streams (see Indexer): the per-call thread count goes to 1.
    embedder = build_embedder(settings.model_copy(update={"torch_threads": 1}) if streams > 1 else settings)
    detector = build_detector(settings)
    # A tenant with an active student detector gets its items found by it (streams/detectors.py).
    detectors = TenantDetectors(
        detector, cache_dir=settings.data_dir / "models", ttl_s=settings.lookup_cache_ttl_s, embedder=embedder
    )
    engine = create_db_engine(settings.database_url)
    sessions = session_factory(engine)
    # Trained heads: new products get each deployed head's vectors; pending deployments re-embed in a thread.
    trained = ModelCache(settings.data_dir / "models")
    heads = DeployedHeads(sessions, trained, embedder.model_key, ttl_s=settings.deployment_cache_ttl_s)
    reembedder = Reembedder(
        engine,
        sessions,
        trained,
        page=settings.reembed_page,
        pause_s=settings.reembed_pause_s,
        settle_s=settings.deployment_cache_ttl_s + SETTLE_MARGIN_S,
        images=ImageCrops.from_settings(settings),  # a fine-tuned tower's pages fetch their images again
        image_page=settings.reembed_image_page,
        image_duty=settings.reembed_image_duty,
        retire_after_s=settings.deployment_cache_ttl_s + SETTLE_MARGIN_S,
        # The visual arm's binary IVFFlat index, built at start-up maybe on few rows, follows the catalog's growth.
        embedder_index=(embedder.model_key, embedder.dim, "binary") if settings.index_kind == "binary" else None,
    )

    @app.task
    async def prepare() -> None:
        # Load the models and make sure the model's vector index exists before the first event.
        def _prepare():
            embedder.load()
            detector.load()
            with engine.begin() as conn:
                # The rebuilds' memory (Reembedder.index_memory), for this transaction: faster HNSW builds, and
                # the IVF lists a large catalog wants (ivf_lists caps them to what the build's memory can cluster).
                set_build_memory(conn, reembedder.index_memory, local=True)
                ensure_vector_index(conn, embedder.model_key, embedder.dim)
                if settings.index_kind == "binary":  # the visual arm searches this one (VITRINE_INDEX_KIND)
                    ensure_vector_index(conn, embedder.model_key, embedder.dim, kind="binary")

        await wait_out_outages(lambda: asyncio.to_thread(_prepare))  # a worker started during an outage waits
        log.info("worker ready: embedder %s (dim %d), detector %s", embedder.model_key, embedder.dim, detector.name)
        # Daemon threads: their pages and queries are transactions, so the process may end in the middle of one.
        # The index check (rebuilds, IVF tunings of minutes) runs apart from the deployments, which do not wait on it.
        for target, name in (
            (reembedder.run_forever, "vitrine-reembed"),
            (reembedder.maintain_indexes_forever, "vitrine-indexes"),
        ):
            threading.Thread(target=target, args=(threading.Event(),), name=name, daemon=True).start()

    async def send_dead_letter(
        key: bytes | None, value: bytes, error: str, attempts: int, topic: str | None = None
    ) -> None:
        reason = error.split(":")[0][:60]
        metrics.DEAD_LETTERS.labels(reason).inc()
        log.error("dead-lettering %r after %d attempt(s): %s", key, attempts, error[:300])
        record = dead_letter_record(topic or events_topic.get_topic_name(), key, value, error, attempts)
        await dead_letters.send(key=key, value=record.model_dump_json().encode())

    async def publish(key: bytes | None, notice: ProductIndexed) -> None:
        metrics.EVENTS.labels(notice.status).inc()
        await indexed.send(key=key, value=notice.model_dump_json().encode())

    @app.agent(events_topic)
    async def ingest(stream):
        fetcher = ImageFetcher.from_settings(settings)  # deadline and per-host limits: streams/image_fetch.py
        indexer = Indexer(
            sessions=sessions,
            embedder=embedder,
            detector=detector,
            detectors=lambda tenant_id: detectors.for_tenant(sessions, tenant_id),
            fetcher=fetcher,
            policy=ItemPolicy(
                settings.detect_min_score,
                settings.detect_min_area,
                settings.detect_max_items,
                settings.detect_iou_threshold,
            ),
            max_image_bytes=settings.max_image_bytes,
            max_image_pixels=settings.max_image_pixels,
            refetch_after_s=settings.image_refetch_after_s,
            retry_after_s=settings.image_retry_after_s,
            model_streams=streams,
            heads=heads.get,
        )
        retry_images = asyncio.ensure_future(indexer.retry_pending_forever())  # images a host failed for now
        redetect = asyncio.ensure_future(indexer.redetect_forever())  # images whose tenant's detector changed
        try:
            async for batch in stream.take_events(BATCH_MAX, within=BATCH_WITHIN_S):
                metrics.BATCH_SIZE.observe(len(batch))
                await process_batch(indexer, [(e.key, e.value) for e in batch], publish, send_dead_letter)
        finally:
            retry_images.cancel()
            redetect.cancel()
            await fetcher.aclose()

    interactions_topic = app.topic(settings.topic(INTERACTIONS.name), value_serializer="raw", key_serializer="raw")

    @app.agent(interactions_topic)
    async def interactions(stream):
        async for batch in stream.take_events(500, within=0.5):
            await record_batch(
                sessions,
                [(e.key, e.value) for e in batch],
                settings.popularity_half_life_s,
                functools.partial(send_dead_letter, topic=interactions_topic.get_topic_name()),
            )

    if settings.results_refresh_s > 0:

        @app.timer(settings.results_refresh_s)
        async def results_snapshots() -> None:
            await refresh_results(engine, settings.results_refresh_s)

    lag_cache: dict = {"at": 0.0}

    @app.page("/metrics/")
    async def metrics_page(web, request):
        if time.monotonic() - lag_cache["at"] > 5:  # lag asks the broker: at most every 5 s
            lag_cache["at"] = time.monotonic()
            try:
                lag = await asyncio.to_thread(
                    consumer_lag,
                    settings.kafka_bootstrap,
                    settings.app_id,
                    [events_topic.get_topic_name(), interactions_topic.get_topic_name()],
                )
                for topic, value in lag.items():
                    metrics.LAG.labels(topic).set(value)
            except Exception as exc:  # metrics must not fail because the broker is slow
                log.warning("consumer lag unavailable: %r", exc)
        # As a header: aiohttp refuses a content_type argument with a charset, which prometheus_client's has.
        return web.bytes(generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    return app


async def refresh_results(engine, refresh_s: float) -> list:
    """The timer's job: recompute the experiment result snapshots that are due, in a thread; never raises.

    Every worker runs it; the per-experiment advisory lock lets one compute and the others skip.
    A snapshot younger than 0.9 x the interval is left alone (another worker's tick just made it).
    """
    from db.experiment_snapshots import refresh_due

    try:
        return await asyncio.to_thread(refresh_due, engine, older_than_s=0.9 * refresh_s)
    except Exception:  # the database is away or a query failed: the next tick tries again
        log.exception("refreshing experiment result snapshots failed")
        return []


def model_streams(settings: Settings) -> int:
    """Chunks in the models at once: one per usable core (CPU quota included) with the thread-safe whole-image detector.

    Measured on 2 shared cores (docs/ingestion.md): under load 5.6 the ingest pipeline ran at 16.7
    images/s with one onnxruntime call on both cores and at 30.9 with one single-threaded call; on a
    quiet machine two single-threaded streams embed faster than one two-threaded call (129.7 vs
    115.5 images/s). YOLO (torch, not thread-safe) and an explicit VITRINE_TORCH_THREADS keep one stream.
    """
    if settings.detector != "whole-image" or settings.torch_threads > 0:
        return 1
    return min(4, usable_cpus())


def retrying(**kwargs) -> AsyncRetrying:
    """MAX_ATTEMPTS tries with the jittered BACKOFF between them; what to retry and the callbacks in kwargs."""
    return AsyncRetrying(stop=stop_after_attempt(MAX_ATTEMPTS), wait=BACKOFF, **kwargs)


def dead_letter_record(topic: str, key: bytes | None, value: bytes, error: str, attempts: int) -> DeadLetter:
    """The dead letter of one message of `topic`: its key and original value, kept whole for a replay there."""
    return DeadLetter(
        topic=topic,
        key=key.decode(errors="replace") if key else None,
        payload=value.decode(errors="replace"),
        error=error,
        attempts=attempts,
    )


async def process_batch(
    indexer: Indexer,
    messages: list[tuple[bytes | None, bytes]],
    publish,
    dead_letter,
    health: DatabaseHealth = DATABASE,
) -> None:
    """Apply a batch: outages are waited out; failed events are retried, tried alone, and only then dead-lettered."""
    pending: list[tuple[bytes | None, bytes, CatalogEvent]] = []
    for key, value in messages:
        try:
            pending.append((key, value, CatalogEvent.model_validate_json(value)))
        except ValidationError as exc:
            await dead_letter(key, value, f"invalid event: {exc.errors(include_url=False)}", 1)
    if not pending:
        return

    async def handle(group: list[tuple[bytes | None, bytes, CatalogEvent]]) -> list[ProductIndexed | BaseException]:
        async def indexed(i: int, notice: ProductIndexed) -> None:
            # As soon as the event's chunk is committed, in event order; stamped now, not when the
            # notice was built before the write, so event-to-indexed latencies are not read low.
            await publish(group[i][0], notice.model_copy(update={"indexed_at": utcnow()}))

        return await indexer.handle_batch([e for _, _, e in group], on_result=indexed)

    async def attempt(alone: bool) -> list[tuple[bytes | None, bytes, CatalogEvent, BaseException]]:
        nonlocal pending
        if alone:  # the last try: each event by itself, so one that fails only fails itself
            results = [(await handle([m]))[0] for m in pending]
        else:
            results = await handle(pending)
        failed = [
            (key, value, event, result)
            for (key, value, event), result in zip(pending, results)
            if isinstance(result, BaseException)
        ]
        pending = [(k, v, e) for k, v, e, _ in failed]  # the next attempt redoes only these
        outage = next((error for *_, error in failed if is_outage(error)), None)
        if outage is not None:
            raise outage  # waited out by wait_out_outages, not counted as one of the MAX_ATTEMPTS
        return failed

    tries = 0

    async def one_try() -> list[tuple[bytes | None, bytes, CatalogEvent, BaseException]]:
        nonlocal tries
        tries += 1
        return await wait_out_outages(lambda: attempt(alone=tries == MAX_ATTEMPTS and len(pending) > 1), health)

    def log_retry(state: RetryCallState) -> None:
        failed = state.outcome.result()
        log.warning(
            "%d event(s) failed on attempt %d (first: %s); retrying in %.1fs",
            len(failed),
            state.attempt_number,
            failure_reason(failed[0][3])[:200],
            state.next_action.sleep,
        )

    # Failed events come back as results, not exceptions: retry while any failed, then hand back the last
    # failures. An exception from handle_batch itself is a bug and propagates at once (retry_if_result).
    failed = await retrying(
        retry=retry_if_result(bool), before_sleep=log_retry, retry_error_callback=lambda state: state.outcome.result()
    )(one_try)
    for key, value, _, error in failed:
        await dead_letter(key, value, failure_reason(error), MAX_ATTEMPTS)


async def record_batch(
    sessions,
    messages: list[tuple[bytes | None, bytes]],
    half_life_s: float,
    dead_letter,
    health: DatabaseHealth = DATABASE,
) -> None:
    """Write interaction events idempotently; outages are waited out, and an event the database refuses fails alone.

    A batch that fails for a reason other than an outage (or a lost lock race, retried a few times) is
    split in halves until each event that fails by itself is dead-lettered alone: never its batch,
    never another tenant's events, and its error names only its own values.
    """
    parsed: list[tuple[bytes | None, bytes, InteractionEvent]] = []
    for key, value in messages:
        try:
            parsed.append((key, value, InteractionEvent.model_validate_json(value)))
        except ValidationError as exc:
            await dead_letter(key, value, f"invalid interaction: {exc.errors(include_url=False)}", 1)

    def write(part: list[tuple[bytes | None, bytes, InteractionEvent]]) -> tuple[int, list]:
        events = [e for _, _, e in part]
        with sessions.begin() as s:
            known = known_tenants(s, {e.tenant_id for e in events})
            new = record_interactions(s, [e for e in events if e.tenant_id in known], half_life_s=half_life_s)
        return new, [m for m in part if m[2].tenant_id not in known]

    async def apply(part: list[tuple[bytes | None, bytes, InteractionEvent]], tries: int = 1) -> None:
        try:
            new, unknown = await wait_out_outages(
                lambda: retrying(retry=retry_if_exception(is_transient), reraise=True)(asyncio.to_thread, write, part),
                health,
            )
        except Exception as exc:
            if len(part) == 1:
                key, value, event = part[0]
                await dead_letter(key or event.key.encode(), value, failure_reason(exc), tries)
                return
            log.warning(
                "a batch of %d interaction(s) failed (%s); splitting it to find the event(s) at fault",
                len(part),
                failure_reason(exc)[:200],
            )
            await apply(part[: len(part) // 2], tries + 1)
            await apply(part[len(part) // 2 :], tries + 1)
            return
        metrics.INTERACTIONS.labels("new").inc(new)
        metrics.INTERACTIONS.labels("duplicate").inc(len(part) - len(unknown) - new)
        for key, value, event in unknown:
            await dead_letter(key or event.key.encode(), value, f"unknown tenant {event.tenant_id!r}", 1)

    if parsed:
        await apply(parsed)
