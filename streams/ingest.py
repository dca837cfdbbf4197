"""Index catalog events: fetch images, detect and embed the new ones, one transaction per product.

Kept free of faust so the same code runs in the worker agent, in tests and in benchmarks.
A batch of events shares one detector/embedder pass, so the models see full batches under load.
Blocking work (models, SQL) runs in threads; the event loop only waits on HTTP.

An image fails alone, never its product: a permanent failure (404, not an image, refused address)
is stored on the image row as `failed` with its reason; a transient one (5xx after the fetcher's
retries, refused connection, the fetch deadline) as `pending` with its reason, and the product is
indexed with its other images. A pending image is fetched again on its product's next event and by
`retry_pending_images` (the worker runs it every `image_retry_after_s`). A known image whose re-fetch
fails transiently keeps its stored items. Since every fetch ends by the fetcher's deadline, a batch
waits at most that long for a slow host, and nothing is retried or dead-lettered for one.

Every newly decoded image leaves a small WebP thumbnail (`vision.image.make_thumbnail`, ~6-9 ms for a
640 px photo) written with its row, so the dashboards show pictures without ever fetching a tenant URL.
An unchanged image keeps its stored thumbnail; one indexed before thumbnails existed gets one when its
bytes are next downloaded (a decode and a thumbnail, no models).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from core.contracts import CatalogEvent, ProductIndexed
from db import catalog
from db.catalog import DerivedModel, ImageResult, ItemRow, KnownImage, PendingImage
from db.product_queries import indexed_item_counts
from streams import metrics
from streams.image_fetch import FetchError, ImageFetcher
from streams.tower_images import embed_each
from vision.detector import Detector
from vision.image import ImageError, content_hash, load_image, make_thumbnail
from vision.items import extract_items

log = logging.getLogger(__name__)

# A re-detect claim whose worker died before writing is claimed again after this long.
REDETECT_RETRY_S = 60.0


# Awaited with (index in the batch, notice) once an event's outcome is written.
OnResult = Callable[[int, ProductIndexed], Awaitable[None]]


@dataclass(frozen=True)
class ItemPolicy:
    min_score: float = 0.25
    min_area: float = 0.01
    max_items: int = 8
    iou_threshold: float = 0.7


@dataclass
class _Work:
    """One upsert in flight through the stages of a batch."""

    event: CatalogEvent
    known: dict[str, KnownImage]
    fetched: list[tuple[str, bytes | FetchError | KnownImage]] | None = None
    images: list[ImageResult] | None = None


class Indexer:
    """Turns catalog events into rows; idempotent, so at-least-once delivery is harmless."""

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        embedder,
        detector,
        fetcher: ImageFetcher,
        policy: ItemPolicy = ItemPolicy(),
        max_image_bytes: int = 20 * 1024 * 1024,
        max_image_pixels: int = 40_000_000,
        chunk_images: int = 32,
        refetch_after_s: float = 6 * 3600,
        retry_after_s: float = 300.0,
        model_streams: int = 1,
        executor: ThreadPoolExecutor | None = None,
        heads: Callable[[], Mapping[str, Sequence[DerivedModel]]] | None = None,
        detectors: Callable[[str], Detector] | None = None,
    ):
        """`heads`: per tenant, the deployed trained heads whose vectors are written with the backbone's;
        `detectors`: tenant id -> its detector (its active student), when not `detector` for every tenant."""
        self.sessions = sessions
        self.heads = heads
        self.embedder = embedder
        self.detector = detector
        self.detectors = detectors
        self.fetcher = fetcher
        self.policy = policy
        self.max_image_bytes = max_image_bytes
        self.max_image_pixels = max_image_pixels
        # No semaphore of our own: the fetcher's connection pool limits downloads in all and per
        # host, and a fetch waiting here for a slow host's slot would hold a slot of everyone's.
        self.chunk_images = chunk_images
        self.refetch_after_s = refetch_after_s
        self.retry_after_s = retry_after_s
        # `model_streams` chunks go through the models at once, each in its own thread. One stream
        # whose inference uses every core loses half its speed as soon as anything else runs (the
        # cores wait for each other inside every operator); N single-threaded streams do not.
        self.model_streams = max(1, int(model_streams))
        self.executor = executor or ThreadPoolExecutor(
            max_workers=self.model_streams, thread_name_prefix="vitrine-model"
        )

    async def handle(self, event: CatalogEvent) -> ProductIndexed:
        """Apply one event; raises on failure (the caller retries or dead-letters)."""
        result = (await self.handle_batch([event]))[0]
        if isinstance(result, BaseException):
            raise result
        return result

    async def handle_batch(
        self, events: list[CatalogEvent], on_result: OnResult | None = None
    ) -> list[ProductIndexed | BaseException]:
        """Apply events in order; each result is the notice to publish, or the exception of that event.

        The batch runs as a pipeline of chunks of about `chunk_images` images to fetch or embed: while
        the model thread embeds chunk k, chunk k+1 is fetched and chunk k-1 is written, so the model
        stays busy. Events with nothing to fetch or embed (a re-sent, unchanged catalog) do not count,
        so a whole batch of them is one chunk and one transaction. Chunks are written in order, so two
        versions of one product land oldest first. `on_result(i, notice)` is awaited for each event as
        soon as its chunk is written (in event order), so notices of a large batch do not wait for its end.
        """
        results: list[ProductIndexed | BaseException | None] = [None] * len(events)
        works: dict[int, _Work] = {}
        timeline: list[tuple[str, float, float]] = []
        started = time.perf_counter()

        def mark(stage: str, t0: float) -> None:
            timeline.append((stage, t0 - started, time.perf_counter() - started))

        try:
            states = await asyncio.to_thread(self._states, [e for e in events if e.type == "product.upserted"])
        except Exception as exc:  # the database is down: every event of the batch failed
            return [exc] * len(events)
        mark("states", started)
        redelivered: dict[int, tuple[str, str]] = {}  # events whose very version is stored already
        for i, e in enumerate(events):
            if e.type != "product.upserted":
                continue
            stored = states.get((e.tenant_id, e.product.id))
            if stored is not None and stored[0] >= e.product.version:
                log.debug("skip %s v%d: stored v%d is not older", e.key, e.product.version, stored[0])
                results[i] = _notice(e, "skipped_stale")
                if stored[0] == e.product.version:
                    redelivered[i] = e_key(e)
            else:
                works[i] = _Work(e, stored[1] if stored else {})
        if redelivered:  # e.g. after a crash between the write and the offset commit: it is indexed, say so
            try:
                live = await asyncio.to_thread(self._indexed_items, list(set(redelivered.values())))
            except Exception as exc:  # the database is down: every event of the batch failed
                return [exc] * len(events)
            for i, key in redelivered.items():
                if key in live:  # a tombstone at that version stays skipped_stale
                    results[i] = _notice(events[i], "indexed", live[key])

        chunks = self._chunks(events, works)
        fetching = asyncio.ensure_future(self._fetch_chunk(chunks[0], works, results)) if chunks else None
        writing: asyncio.Future | None = None
        in_models: deque[tuple[list[int], asyncio.Future, float]] = deque()

        async def finish_oldest() -> None:
            nonlocal writing
            chunk, modelling, t0 = in_models.popleft()
            try:
                await modelling
            except Exception as exc:  # a model failure is not the data's fault: retry/dead-letter them
                for i in chunk:
                    if i in works and results[i] is None:
                        results[i] = exc
            metrics.STAGE_SECONDS.labels("models").observe(time.perf_counter() - t0)
            mark("models", t0)
            # Chained, not awaited: the next chunk goes into the models while this one waits for
            # the previous write (awaiting it here left a model stream idle ~0.1 s per chunk).
            writing = asyncio.ensure_future(self._write_after(writing, chunk, events, works, results, on_result))

        loop = asyncio.get_running_loop()
        for k, chunk in enumerate(chunks):
            t0 = time.perf_counter()
            await fetching
            mark("wait_fetch", t0)
            if k + 1 < len(chunks):
                fetching = asyncio.ensure_future(self._fetch_chunk(chunks[k + 1], works, results))
            ready = [works[i] for i in chunk if i in works and results[i] is None]
            modelling = loop.run_in_executor(self.executor, self._models, ready) if ready else _done()
            in_models.append((chunk, modelling, time.perf_counter()))
            if len(in_models) >= self.model_streams:
                await finish_oldest()  # chunks leave the models and are written in order
        while in_models:
            await finish_oldest()
        if writing is not None:
            t0 = time.perf_counter()
            await writing
            mark("wait_write", t0)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "batch of %d events, %d chunk(s) in %.3f s: %s",
                len(events),
                len(chunks),
                time.perf_counter() - started,
                " ".join(f"{n} {a:.3f}-{b:.3f}" for n, a, b in timeline),
            )
        return results  # type: ignore[return-value]

    def _chunks(self, events: list[CatalogEvent], works: dict[int, _Work]) -> list[list[int]]:
        """Consecutive event indices grouped so that each group has about `chunk_images` images to fetch.

        The chunk count is rounded up to a multiple of `model_streams` and the images spread evenly
        over the chunks: the last chunks of a batch then leave the models together, where an odd
        one out would run alone with the other streams' cores idle (~6 % of a 300-product run).
        """
        now = datetime.now(UTC)
        counts = [
            sum(1 for u in events[i].product.image_urls if not self._trusted(works[i], str(u), now))
            if i in works
            else 0
            for i in range(len(events))
        ]
        total = sum(counts)
        n = max(1, math.ceil(total / self.chunk_images))
        n = math.ceil(n / self.model_streams) * self.model_streams if total >= self.model_streams else 1
        chunks, current, seen = [], [], 0
        for i, count in enumerate(counts):
            current.append(i)
            seen += count
            if count and seen >= (len(chunks) + 1) * total / n:  # chunk k ends at k/n of the images
                chunks.append(current)
                current = []
        if current and chunks and not any(counts[i] for i in current):
            chunks[-1].extend(current)  # trailing events with nothing to fetch ride with the last chunk
        elif current:
            chunks.append(current)
        return chunks

    def _trusted(self, work: _Work, url: str, now: datetime) -> KnownImage | None:
        """The stored image of a URL fetched within `refetch_after_s` (not downloaded again), else None."""
        known = work.known.get(url)
        if (
            known is not None
            and known.fetched_at is not None
            and (now - known.fetched_at).total_seconds() < self.refetch_after_s
        ):
            return known
        return None

    async def _fetch_chunk(self, chunk: list[int], works: dict[int, _Work], results: list) -> None:
        todo = [i for i in chunk if i in works]
        with metrics.STAGE_SECONDS.labels("fetch").time():
            fetched = await asyncio.gather(*(self._fetch_all(works[i]) for i in todo), return_exceptions=True)
        for i, outcome in zip(todo, fetched):
            if isinstance(outcome, BaseException):
                results[i] = outcome
            else:
                works[i].fetched = outcome

    async def _write_after(
        self,
        previous: asyncio.Future | None,
        chunk: list[int],
        events: list[CatalogEvent],
        works: dict[int, _Work],
        results: list,
        on_result: OnResult | None,
    ) -> None:
        """Write a chunk once the previous chunk's write is done: chunks land (and notify) in order."""
        if previous is not None:
            await previous
        await self._write(chunk, events, works, results, on_result)

    async def _write(
        self,
        chunk: list[int],
        events: list[CatalogEvent],
        works: dict[int, _Work],
        results: list,
        on_result: OnResult | None,
    ) -> None:
        todo = [(i, events[i], works.get(i)) for i in chunk if results[i] is None]
        if todo:
            with metrics.STAGE_SECONDS.labels("write").time():
                written = await asyncio.to_thread(self._write_batch, todo)
            for i, outcome in written.items():
                results[i] = outcome
        if on_result is not None:
            for i in chunk:
                if isinstance(results[i], ProductIndexed):
                    await on_result(i, results[i])

    def _states(self, events: list[CatalogEvent]) -> dict[tuple[str, str], tuple[int, dict[str, KnownImage]]]:
        """Stored version and known image hashes of each product: two queries for the whole batch."""
        with self.sessions() as s:
            return catalog.stored_states(s, [(e.tenant_id, e.product.id) for e in events], self.embedder.model_key)

    def _indexed_items(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """Items of this model for the live products among `keys`."""
        with self.sessions() as s:
            return indexed_item_counts(s, keys, self.embedder.model_key)

    async def _fetch_all(self, work: _Work) -> list[tuple[str, bytes | FetchError | KnownImage]]:
        """Download the product's new images; a known URL fetched recently is trusted as unchanged."""
        urls = [str(u) for u in work.event.product.image_urls]
        now = datetime.now(UTC)

        async def one(url: str):
            known = self._trusted(work, url, now)
            return known if known is not None else await self._fetch(url, work.event.tenant_id)

        return list(zip(urls, await asyncio.gather(*(one(u) for u in urls))))

    async def _fetch(self, url: str, tenant_id: str) -> bytes | FetchError:
        """The image's bytes, or why not (never raises for the image's sake: the product goes on without it).

        A host that ran past the deadline cools down for this tenant only: a CDN shared by many shops
        is not closed to the others because one shop's image there was slow.
        """
        try:
            return (await self.fetcher.fetch(url, scope=tenant_id)).content
        except FetchError as exc:
            metrics.IMAGE_FAILURES.labels(exc.reason.split(":")[0][:40]).inc()
            return exc

    def _models(self, works: list[_Work]) -> None:
        """Load, detect and crop every new image of the batch, then embed all crops in one pass."""
        todo = [
            (url, pos, data, work.known.get(url))
            for work in works
            for pos, (url, data) in enumerate(work.fetched or [])
        ]
        tenants = [work.event.tenant_id for work in works for _ in work.fetched or []]
        results = iter(self._analyse(todo, tenants))
        for work in works:
            work.images = [next(results) for _ in work.fetched or []]

    def _analyse(
        self, todo: list[tuple[str, int, bytes | FetchError | KnownImage, KnownImage | None]], tenants: list[str]
    ) -> list[ImageResult]:
        """One result per (url, position, fetched data, stored image) of the tenant at the same index; crops of
        all new images embedded at once."""
        p = self.policy
        out: list[ImageResult] = []
        pending: list[tuple[ImageResult, list, str]] = []
        for (url, pos, data, known), tenant_id in zip(todo, tenants, strict=True):
            if isinstance(data, FetchError):
                if data.permanent:
                    out.append(ImageResult(url, pos, "failed", reason=data.reason))
                elif known is not None:  # an indexed image could not be re-checked now: keep what we have
                    metrics.IMAGES.labels("kept_after_transient_failure").inc()
                    out.append(ImageResult(url, pos, "ok", content_hash=known.content_hash, fetched=False))
                else:
                    metrics.IMAGES.labels("pending").inc()
                    out.append(ImageResult(url, pos, "pending", reason=data.reason, fetched=False))
                continue
            if isinstance(data, KnownImage):  # not downloaded: same URL, fetched recently
                metrics.IMAGES.labels("not_refetched").inc()
                out.append(ImageResult(url, pos, "ok", content_hash=data.content_hash, fetched=False))
                continue
            digest = content_hash(data)
            if known is not None and known.content_hash == digest:
                # Same URL, same bytes: keep the stored items (and thumbnail); no decode, no models.
                metrics.IMAGES.labels("unchanged").inc()
                thumb = None if known.has_thumbnail else self._thumbnail(data)
                out.append(ImageResult(url, pos, "ok", content_hash=digest, thumbnail=thumb))
                continue
            try:
                loaded = load_image(data, max_bytes=self.max_image_bytes, max_pixels=self.max_image_pixels)
            except ImageError as exc:
                metrics.IMAGE_FAILURES.labels(exc.reason).inc()
                out.append(ImageResult(url, pos, "failed", reason=str(exc)))
                continue
            res = ImageResult(
                url,
                pos,
                "ok",
                content_hash=loaded.content_hash,
                width=loaded.width,
                height=loaded.height,
                thumbnail=make_thumbnail(loaded.image),
            )
            out.append(res)
            detector = self.detectors(tenant_id) if self.detectors is not None else self.detector
            detections = detector.detect([loaded.image])[0]
            crops = extract_items(
                loaded.image,
                detections,
                min_score=p.min_score if detector.min_score is None else detector.min_score,
                min_area=p.min_area,
                max_items=p.max_items,
                iou_threshold=p.iou_threshold,
            )
            pending.append((res, crops, tenant_id))
        all_crops = [c.crop for _, crops, _ in pending for c in crops]
        vectors = self.embedder.embed(all_crops) if all_crops else []
        extras = self._tower_vectors(all_crops, [t for _, crops, t in pending for _ in crops])
        metrics.IMAGES.labels("embedded").inc(len(pending))
        metrics.ITEMS_EMBEDDED.inc(len(all_crops))
        i = 0
        for res, crops, _ in pending:
            res.items = [
                ItemRow(c.detection.kind, c.detection.box, c.detection.label, c.detection.score, vectors[i + j],
                        extras[i + j])
                for j, c in enumerate(crops)
            ]  # fmt: skip
            i += len(crops)
        return out

    def _tower_vectors(self, crops: list, owners: list[str]) -> list[dict]:
        """Per crop, the vectors of its tenant's deployed towers ({key: vector}).

        A tower that fails on the chunk is run again crop by crop, so one crop it cannot take costs only that
        crop's vector, not those of the other products in the chunk. A crop that fails alone is logged and
        counted (`vitrine_worker_tower_failures_total`) and its product indexed all the same without the tower's
        vector; the write marks the deployment for repair (db/catalog.py `_insert_items`), and its sweep, or for
        a ready model a repair pass of the re-embed runner, writes the vector from the image.
        """
        extras: list[dict] = [{} for _ in crops]
        derived = self._derived() or {}
        for tenant in set(owners):
            for model in derived.get(tenant, ()):
                if model.embed is None:
                    continue
                idx = [i for i, t in enumerate(owners) if t == tenant]
                vectors, errors = embed_each(model.embed, [crops[i] for i in idx])
                for error in errors:
                    metrics.TOWER_FAILURES.labels(type(error).__name__).inc()
                if errors:
                    log.error("tower %s of %s did not run on %d of %d crops, their vectors are left for a repair: %s",
                              model.key, tenant, len(errors), len(idx), errors[0])  # fmt: skip
                for i, vector in zip(idx, vectors, strict=True):
                    if vector is not None:
                        extras[i][model.key] = vector
        return extras

    def _thumbnail(self, data: bytes) -> bytes | None:
        """The thumbnail of an unchanged image stored without one; None if it no longer decodes within the limits."""
        try:
            loaded = load_image(data, max_bytes=self.max_image_bytes, max_pixels=self.max_image_pixels)
        except ImageError:
            return None  # the stored items stay; the dashboards show the placeholder
        return make_thumbnail(loaded.image)

    async def retry_pending_images(self, *, limit: int = 256, older_than_s: float | None = None) -> dict[str, int]:
        """Fetch again the images left pending at least `older_than_s` ago (default `retry_after_s`); counts by outcome.

        Each image is claimed first (so another worker's sweep skips it) and its outcome written only
        if its product is still at the version it was claimed at; a newer event wins.
        """
        wait_s = self.retry_after_s if older_than_s is None else older_than_s
        tried_before = datetime.now(UTC) - timedelta(seconds=wait_s)

        def claim() -> list[PendingImage]:
            with self.sessions.begin() as s:
                return catalog.claim_pending_images(s, tried_before=tried_before, limit=limit)

        claimed = await asyncio.to_thread(claim)
        if not claimed:
            return {}
        fetched = await asyncio.gather(*(self._fetch(im.url, im.tenant_id) for im in claimed))
        todo = [(im.url, im.position, data, None) for im, data in zip(claimed, fetched, strict=True)]
        tenants = [im.tenant_id for im in claimed]
        results = await asyncio.get_running_loop().run_in_executor(self.executor, self._analyse, todo, tenants)

        def store() -> int:
            with self.sessions.begin() as s:
                return catalog.store_retried_images(
                    s,
                    list(zip(claimed, results, strict=True)),
                    model_key=self.embedder.model_key,
                    dim=self.embedder.dim,
                    derived=self._derived(),
                )

        written = await asyncio.to_thread(store)
        counts: dict[str, int] = {}
        for r in results:
            counts[r.status] = counts.get(r.status, 0) + 1
        counts["superseded"] = len(claimed) - written
        log.info("retried %d pending image(s): %s", len(claimed), counts)
        return counts

    async def redetect_marked_images(self, *, limit: int = 32, per_tenant: int = 8) -> dict[str, int]:
        """Detect again (with each tenant's detector now) a round of images marked when its detector changed.

        Claimed first (another worker's sweep skips them; a claim whose worker died is due again after
        REDETECT_RETRY_S), fetched, analysed as new, and written with their new items replacing the old.
        """
        tried_before = datetime.now(UTC) - timedelta(seconds=REDETECT_RETRY_S)

        def claim() -> list[catalog.MarkedImage]:
            with self.sessions.begin() as s:
                return catalog.claim_redetect_images(s, tried_before=tried_before, limit=limit, per_tenant=per_tenant)

        claimed = await asyncio.to_thread(claim)
        if not claimed:
            return {}
        fetched = await asyncio.gather(*(self._fetch(m.image.url, m.image.tenant_id) for m in claimed))
        todo = [(m.image.url, m.image.position, data, None) for m, data in zip(claimed, fetched, strict=True)]
        tenants = [m.image.tenant_id for m in claimed]
        results = await asyncio.get_running_loop().run_in_executor(self.executor, self._analyse, todo, tenants)

        def store() -> dict[str, int]:
            with self.sessions.begin() as s:
                return catalog.store_redetected_images(
                    s,
                    list(zip(claimed, results, strict=True)),
                    model_key=self.embedder.model_key,
                    dim=self.embedder.dim,
                    derived=self._derived(),
                )

        counts = await asyncio.to_thread(store)
        log.info("re-detected %d image(s): %s", len(claimed), counts)
        return counts

    async def redetect_forever(self, *, idle_s: float = 5.0, pause_s: float = 0.5) -> None:
        """Run `redetect_marked_images` rounds until cancelled: `pause_s` between rounds while there is work (live
        events keep their share of the model thread), `idle_s` between checks when there is none; never raises."""
        while True:
            try:
                did = sum((await self.redetect_marked_images()).values())
            except Exception:  # the database is away or a model failed: the next round tries again
                log.exception("re-detecting images failed")
                did = 0
            await asyncio.sleep(pause_s if did else idle_s)

    async def retry_pending_forever(self) -> None:
        """Run `retry_pending_images` every `retry_after_s / 2` until cancelled (the worker's sweep); never raises."""
        if self.retry_after_s <= 0:
            return
        while True:
            await asyncio.sleep(self.retry_after_s / 2)
            try:
                while sum((await self.retry_pending_images()).values()) > 0:
                    pass  # a full claim may leave more due: go on until none is left
            except Exception:  # the database is away or a model failed: the next round tries again
                log.exception("retrying pending images failed")

    def _write_batch(self, todo: list[tuple[int, CatalogEvent, _Work | None]]) -> dict[int, object]:
        """Write a chunk in one transaction, set-based; if that fails, product by product."""
        try:
            return self._write_set_based(todo)
        except DBAPIError as exc:
            if exc.connection_invalidated:
                return {i: exc for i, _, _ in todo}  # the database went away: nothing was written
            log.warning(
                "set-based write of %d events failed (%s); writing them one by one",
                len(todo),
                str(exc).splitlines()[0][:200],
            )
        except Exception as exc:
            log.warning("set-based write of %d events failed (%r); writing them one by one", len(todo), exc)
        return self._write_one_by_one(todo)

    def _write_set_based(self, todo: list[tuple[int, CatalogEvent, _Work | None]]) -> dict[int, object]:
        out: dict[int, object] = {}
        # Of several events for one product, only the newest can win; the others are superseded.
        best: dict[tuple[str, str], tuple[int, int]] = {}  # product -> (version, index)
        for i, e, _ in todo:
            if e_key(e) not in best or e.product.version > best[e_key(e)][0]:
                best[e_key(e)] = (e.product.version, i)
        newest = {k: i for k, (_, i) in best.items()}
        with self.sessions.begin() as s:
            upserts = [(i, e, w) for i, e, w in todo if e.type == "product.upserted" and newest[e_key(e)] == i]
            ids = catalog.upsert_products(
                s,
                [(e, w.images) for _, e, w in upserts],
                model_key=self.embedder.model_key,
                dim=self.embedder.dim,
                derived=self._derived(),
            )
            for (i, e, w), pid in zip(upserts, ids):
                out[i] = (
                    _notice(e, "indexed", sum(len(im.items or []) for im in w.images))
                    if pid
                    else _notice(e, "skipped_stale")
                )
            for i, e, w in todo:
                if i in out:
                    continue
                if newest[e_key(e)] != i:
                    out[i] = _notice(e, "skipped_stale")
                else:  # a delete
                    out[i] = self._apply(s, e, w)
        return out

    def _write_one_by_one(self, todo: list[tuple[int, CatalogEvent, _Work | None]]) -> dict[int, object]:
        out: dict[int, object] = {}
        for i, event, work in todo:
            try:
                with self.sessions.begin() as s:
                    out[i] = self._apply(s, event, work)
            except Exception as exc:
                out[i] = exc
        return out

    def _apply(self, s: Session, event: CatalogEvent, work: _Work | None) -> ProductIndexed:
        if event.type == "product.deleted":
            return _notice(event, "deleted" if catalog.delete_product(s, event) else "skipped_stale")
        assert work is not None and work.images is not None
        product_id = catalog.upsert_product(
            s, event, work.images, model_key=self.embedder.model_key, dim=self.embedder.dim, derived=self._derived()
        )
        if product_id is None:
            return _notice(event, "skipped_stale")
        return _notice(event, "indexed", sum(len(im.items or []) for im in work.images))

    def _derived(self) -> Mapping[str, Sequence[DerivedModel]] | None:
        return self.heads() if self.heads is not None else None


def _done() -> asyncio.Future:
    future = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future


def e_key(event: CatalogEvent) -> tuple[str, str]:
    return event.tenant_id, event.product.id


def _notice(event: CatalogEvent, status: str, items: int = 0) -> ProductIndexed:
    return ProductIndexed(
        tenant_id=event.tenant_id,
        product_id=event.product.id,
        version=event.product.version,
        event_id=event.event_id,
        status=status,
        items=items,
    )
