"""The pixels of a tower's re-embed page: each item's image fetched again (SSRF-safe, per tenant) and cropped.

A fine-tuned tower (db/deployments.py `needs_images`) embeds the same crops the deployed embedder's items
came from: the image at the item's URL, cut at its stored box (pixels of the original). The images are
fetched as the worker fetches them (streams/image_fetch.py, with the tenant as the cool-down scope),
decoded within the same limits, and checked against the stored content hash: an image whose bytes
changed since it was indexed is not cropped (its stored boxes belong to the old picture; the product's
next event indexes the new one). Runs in the re-embed thread, outside any transaction.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence

from PIL import Image

from db.deployments import ImageItem
from streams.image_fetch import FetchError, ImageFetcher
from vision.image import ImageError, content_hash, load_image
from vision.items import crop_box


class ImageCrops:
    """Fetches a page's images and crops its items; `crops(items)` -> ({item id: crop}, {reason: count}).

    One fetcher on one event loop of its own for the runner's lifetime (an aiohttp session belongs to one
    loop), so a host that ran past the deadline stays cooled down for its tenant from one page to the next.
    Each image is cropped as soon as it is decoded: a page never holds more than one full image.
    """

    def __init__(
        self,
        fetcher: Callable[[], ImageFetcher],
        *,
        max_bytes: int,
        max_pixels: int,
    ):
        self.make_fetcher, self.max_bytes, self.max_pixels = fetcher, max_bytes, max_pixels
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fetcher: ImageFetcher | None = None

    @classmethod
    def from_settings(cls, settings) -> ImageCrops:
        """Fetched and decoded within the worker's own limits (`core.settings.Settings`)."""
        return cls(
            lambda: ImageFetcher.from_settings(settings),
            max_bytes=settings.max_image_bytes,
            max_pixels=settings.max_image_pixels,
        )

    def crops(self, items: list[ImageItem]) -> tuple[dict[int, Image.Image], Counter]:
        """The crop of every item whose image could be fetched, decoded and is unchanged; why not for the rest.

        The hash is checked per item: two products may share an image URL and one of them have indexed an
        older picture at it.
        """
        by_image: dict[tuple[str, str], list[ImageItem]] = {}
        for it in items:
            by_image.setdefault((it.tenant_id, it.url), []).append(it)
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        fetched = self._loop.run_until_complete(self._fetch_all(list(by_image)))
        crops: dict[int, Image.Image] = {}
        failures: Counter = Counter()
        for key, data in zip(by_image, fetched, strict=True):
            todo = by_image[key]
            if isinstance(data, FetchError):
                failures["fetch_failed"] += len(todo)
                continue
            digest = content_hash(data)
            changed = [it for it in todo if it.content_hash is not None and it.content_hash != digest]
            failures["image_changed"] += len(changed)
            todo = [it for it in todo if it not in changed]
            if not todo:
                continue
            try:
                image = load_image(data, max_bytes=self.max_bytes, max_pixels=self.max_pixels).image
            except ImageError:
                failures["undecodable"] += len(todo)
                continue
            for it in todo:
                crops[it.id] = crop_box(image, it.box)
        return crops, failures

    async def _fetch_all(self, images: list[tuple[str, str]]) -> list[bytes | FetchError]:
        if self._fetcher is None:
            self._fetcher = self.make_fetcher()
        fetcher = self._fetcher

        async def one(tenant: str, url: str) -> bytes | FetchError:
            try:
                return (await fetcher.fetch(url, scope=tenant)).content
            except FetchError as exc:
                return exc

        return list(await asyncio.gather(*(one(t, u) for t, u in images)))

    def close(self) -> None:
        """Close the fetcher's connections and the loop (a runner that stops for good)."""
        if self._loop is not None:
            if self._fetcher is not None:
                self._loop.run_until_complete(self._fetcher.aclose())
            self._loop.close()
            self._loop = self._fetcher = None


def embed_each(embed: Callable[[list], Sequence], crops: list) -> tuple[list, list[Exception]]:
    """A tower's vectors of `crops` (None where it failed) and its errors: all crops at once, else, if that
    raised, each crop alone, so a crop the tower cannot take costs only its own vector."""
    try:
        vectors = list(embed(crops))
        if len(vectors) != len(crops):
            raise ValueError(f"the tower gave {len(vectors)} vectors for {len(crops)} crops")
        return vectors, []
    except Exception as exc:  # onnxruntime: the graph itself, or one crop it cannot take
        if len(crops) == 1:
            return [None], [exc]
    vectors, errors = [], []
    for crop in crops:
        try:
            vectors.append(embed([crop])[0])
        except Exception as exc:
            vectors.append(None)
            errors.append(exc)
    return vectors, errors
