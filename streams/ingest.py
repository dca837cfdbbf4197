"""Index one catalog event: fetch images, detect and embed the new ones, write one transaction.

Kept free of faust so the same code runs in the worker agent, in tests and in benchmarks.
Blocking work (models, SQL) runs in a thread pool; the event loop only waits on HTTP.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from db import catalog
from db.catalog import ImageResult, ItemRow
from streams.events import CatalogEvent, ProductIndexed
from streams.image_fetch import FetchError, ImageFetcher
from vision.image import ImageError, load_image
from vision.items import extract_items

log = logging.getLogger(__name__)


class TransientError(Exception):
    """Worth retrying (network hiccup, 5xx, database restart)."""


@dataclass(frozen=True)
class ItemPolicy:
    min_score: float = 0.25
    min_area: float = 0.01
    max_items: int = 8
    iou_threshold: float = 0.7


class Indexer:
    """Turns catalog events into rows; idempotent, so at-least-once delivery is harmless."""

    def __init__(self, *, sessions: sessionmaker[Session], embedder, detector, fetcher: ImageFetcher,
                 policy: ItemPolicy = ItemPolicy(), max_image_bytes: int = 20 * 1024 * 1024,
                 max_image_pixels: int = 40_000_000, executor: ThreadPoolExecutor | None = None):
        self.sessions = sessions
        self.embedder = embedder
        self.detector = detector
        self.fetcher = fetcher
        self.policy = policy
        self.max_image_bytes = max_image_bytes
        self.max_image_pixels = max_image_pixels
        # One model thread: torch already uses every core inside one call.
        self.executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="vitrine-model")

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def handle(self, event: CatalogEvent) -> ProductIndexed:
        """Apply one event; returns the notice to publish."""
        if event.type == "product.deleted":
            applied = await asyncio.to_thread(self._delete, event)
            return self._notice(event, "deleted" if applied else "skipped_stale")
        state = await asyncio.to_thread(self._state, event)
        if state is not None and state[0] >= event.product.version:
            log.info("skip %s v%d: stored v%d is not older", event.key, event.product.version, state[0])
            return self._notice(event, "skipped_stale")
        known = state[1] if state else {}
        urls = [str(u) for u in event.product.image_urls]
        fetched = await asyncio.gather(*(self._fetch(u) for u in urls))
        images = await self._run(self._process_images, list(zip(urls, fetched)), known)
        product_id = await asyncio.to_thread(self._write, event, images)
        if product_id is None:
            return self._notice(event, "skipped_stale")
        n_items = sum(len(im.items or []) for im in images)
        return self._notice(event, "indexed", n_items)

    def _notice(self, event: CatalogEvent, status: str, items: int = 0) -> ProductIndexed:
        return ProductIndexed(tenant_id=event.tenant_id, product_id=event.product.id,
                              version=event.product.version, event_id=event.event_id, status=status, items=items)

    def _state(self, event: CatalogEvent) -> tuple[int, dict[str, str]] | None:
        with self.sessions() as s:
            stored = catalog.stored_state(s, event.tenant_id, event.product.id)
            if stored is None:
                return None
            product_id, version = stored
            return version, catalog.known_image_hashes(s, product_id, self.embedder.model_key)

    async def _fetch(self, url: str) -> bytes | FetchError:
        try:
            return (await self.fetcher.fetch(url)).content
        except FetchError as exc:
            if not exc.permanent:
                raise TransientError(exc.reason) from exc
            return exc

    def _process_images(self, fetched: list[tuple[str, bytes | FetchError]],
                        known: dict[str, str]) -> list[ImageResult]:
        p = self.policy
        results: list[ImageResult] = []
        todo: list[tuple[ImageResult, list]] = []
        for pos, (url, data) in enumerate(fetched):
            if isinstance(data, FetchError):
                results.append(ImageResult(url, pos, "failed", reason=data.reason))
                continue
            try:
                loaded = load_image(data, max_bytes=self.max_image_bytes, max_pixels=self.max_image_pixels)
            except ImageError as exc:
                results.append(ImageResult(url, pos, "failed", reason=str(exc)))
                continue
            res = ImageResult(url, pos, "ok", content_hash=loaded.content_hash, width=loaded.width,
                              height=loaded.height)
            results.append(res)
            if known.get(url) == loaded.content_hash:
                continue  # same URL, same pixels: keep the stored items, skip the models
            detections = self.detector.detect([loaded.image])[0]
            crops = extract_items(loaded.image, detections, min_score=p.min_score, min_area=p.min_area,
                                  max_items=p.max_items, iou_threshold=p.iou_threshold)
            todo.append((res, crops))
        all_crops = [c for _, crops in todo for c in crops]
        vectors = self.embedder.embed([c.crop for c in all_crops]) if all_crops else []
        i = 0
        for res, crops in todo:
            res.items = [ItemRow(c.detection.kind, c.detection.box, c.detection.label, c.detection.score,
                                 vectors[i + j]) for j, c in enumerate(crops)]
            i += len(crops)
        return results

    def _write(self, event: CatalogEvent, images: list[ImageResult]) -> int | None:
        with self.sessions.begin() as s:
            return catalog.upsert_product(s, event, images, model_key=self.embedder.model_key,
                                          dim=self.embedder.dim)

    def _delete(self, event: CatalogEvent) -> bool:
        with self.sessions.begin() as s:
            return catalog.delete_product(s, event)
