"""A static HTTP server for a folder of images on 127.0.0.1 (the demo, tests and benchmarks)."""

from __future__ import annotations

import functools
import logging
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

log = logging.getLogger(__name__)


class _QuietHandler(SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a fetcher reuses its connections
    disable_nagle_algorithm = True  # headers and body are two writes: Nagle would add 40 ms each

    def log_message(self, format, *args):  # noqa: A002 - stdlib signature
        log.debug("image server: " + format, *args)


class ImageServer:
    """Serves `root` at http://127.0.0.1:<port>/ from a daemon thread."""

    def __init__(self, root: Path, port: int = 0):
        handler = functools.partial(_QuietHandler, directory=str(root))
        # socketserver's default listen backlog is 5: a burst of concurrent fetches would see
        # dropped SYNs and 1 s retransmits, and the benchmark would measure that instead.
        ThreadingHTTPServer.request_queue_size = 128
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True, name="image-server")

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"

    def start(self) -> "ImageServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> "ImageServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
