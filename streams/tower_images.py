"""The pixels of a tower's re-embed page: each item's image fetched again (SSRF-safe, per tenant) and cropped.

A fine-tuned tower (db/deployments.py `needs_images`) embeds the same crops the deployed embedder's items
came from: the image at the item's URL, cut at its stored box (pixels of the original). The images are
fetched as the worker fetches them (streams/image_fetch.py, with the tenant as the cool-down scope),
decoded within the same limits, and checked against the stored content hash: an image whose bytes
changed since it was indexed is not cropped (its stored boxes belong to the old picture; the product's
next event indexes the new one). Runs in the re-embed thread, outside any transaction; each page gets
a fetcher of its own on a short-lived event loop (an aiohttp session belongs to one loop).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

from PIL import Image

from db.deployments import ImageItem
from streams.image_fetch import FetchError, ImageFetcher
from vision.image import ImageError, content_hash, load_image
from vision.items import crop_box


class ImageCrops:
    """Fetches a page's images and crops its items; `crops(items)` -> ({item id: crop}, {reason: count})."""

    def __init__(
        self,
        fetcher: Callable[[], ImageFetcher],
        *,
        max_bytes: int,
        max_pixels: int,
    ):
        self.fetcher, self.max_bytes, self.max_pixels = fetcher, max_bytes, max_pixels

    @classmethod
    def from_settings(cls, settings) -> ImageCrops:
        """Fetched and decoded within the worker's own limits (`core.settings.Settings`)."""
        return cls(
            lambda: ImageFetcher.from_settings(settings),
            max_bytes=settings.max_image_bytes,
            max_pixels=settings.max_image_pixels,
        )

    def crops(self, items: list[ImageItem]) -> tuple[dict[int, Image.Image], Counter]:
        """The crop of every item whose image could be fetched, decoded and is unchanged; why not for the rest."""
        images = {(it.tenant_id, it.url): it.content_hash for it in items}
        fetched = asyncio.run(self._fetch_all(list(images)))
        decoded: dict[tuple[str, str], Image.Image | str] = {}
        for key, data in fetched.items():
            if isinstance(data, FetchError):
                decoded[key] = "fetch_failed"
            elif images[key] is not None and content_hash(data) != images[key]:
                decoded[key] = "image_changed"
            else:
                try:
                    decoded[key] = load_image(data, max_bytes=self.max_bytes, max_pixels=self.max_pixels).image
                except ImageError:
                    decoded[key] = "undecodable"
        crops: dict[int, Image.Image] = {}
        failures: Counter = Counter()
        for it in items:
            image = decoded[(it.tenant_id, it.url)]
            if isinstance(image, str):
                failures[image] += 1
            else:
                crops[it.id] = crop_box(image, it.box)
        return crops, failures

    async def _fetch_all(self, images: list[tuple[str, str]]) -> dict[tuple[str, str], bytes | FetchError]:
        fetcher = self.fetcher()
        try:

            async def one(tenant: str, url: str) -> bytes | FetchError:
                try:
                    return (await fetcher.fetch(url, scope=tenant)).content
                except FetchError as exc:
                    return exc

            got = await asyncio.gather(*(one(t, u) for t, u in images))
        finally:
            await fetcher.aclose()
        return dict(zip(images, got, strict=True))
