"""A static HTTP server for a folder of images on 127.0.0.1 (the demo, tests and benchmarks).

aiohttp on its own event loop in a daemon thread: keep-alive and async I/O let it answer a
fetcher's concurrent requests several times faster than http.server's thread per request, so a
benchmark measures vitrine rather than its stand-in for a retailer's CDN. Like a CDN's edge it
answers from memory: each file is read once and kept, an order of magnitude less CPU per image
than aiohttp's static-file handler on the cores the benchmarked pipeline uses (docs/ingestion.md).
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import threading
from pathlib import Path

from aiohttp import web

log = logging.getLogger(__name__)


class ImageServer:
    """Serves `root` at http://127.0.0.1:<port>/ until stop()."""

    def __init__(self, root: Path, port: int = 0):
        self.root = Path(root)
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._cache: dict[str, bytes] = {}
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="image-server")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"

    async def _get(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        body = self._cache.get(name)
        if body is None:
            path = self.root / name
            # One file directly in the folder: no subpaths, no dot files, no symlinks out of it.
            if "/" in name or "\\" in name or name.startswith(".") or not path.is_file() or path.is_symlink():
                raise web.HTTPNotFound()
            body = self._cache[name] = path.read_bytes()
        return web.Response(body=body, content_type=mimetypes.guess_type(name)[0] or "application/octet-stream")

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/{name}", self._get)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, backlog=512)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    def start(self) -> ImageServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()  # else the garbage collector closes it, warning, at some later point

    def __enter__(self) -> ImageServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
