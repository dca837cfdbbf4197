"""An image server with misbehaving routes, for the ingest tests (the remote image server is the process edge)."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class Routes:
    """What the server answers; tests may change `mutable` between events."""

    def __init__(self, photos: dict[str, bytes]):
        self.photos = photos
        self.mutable = photos["bus-front.jpg"]
        self.hits: dict[str, int] = {}
        self.port = 0
        # 100,000 x 100,000 pixels of one colour: a few hundred bytes of PNG, 30 GB decoded.
        self.bomb = b"\x89PNG\r\n\x1a\n" + _bomb_chunks()

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        path = h.path.split("?")[0]
        self.hits[path] = self.hits.get(path, 0) + 1
        name = path.rsplit("/", 1)[-1]
        if path.startswith("/img/") and name in self.photos:
            return _send(h, 200, self.photos[name], "image/jpeg")
        if path == "/mutable.jpg":
            return _send(h, 200, self.mutable, "image/jpeg")
        if path == "/slow.jpg":
            time.sleep(6)
            return _send(h, 200, self.photos["bus-front.jpg"], "image/jpeg")
        if path == "/page.html":
            return _send(h, 200, b"<html>not an image</html>", "text/html")
        if path == "/fake.jpg":
            return _send(h, 200, b"GIF89a but not really" * 10, "image/jpeg")
        if path == "/bomb.png":
            return _send(h, 200, self.bomb, "image/png")
        if path == "/huge-undeclared.jpg":  # 3 MB with no Content-Length: only the streamed count can tell
            h.send_response(200)
            h.send_header("Content-Type", "image/jpeg")
            h.send_header("Connection", "close")
            h.end_headers()
            for _ in range(48):
                h.wfile.write(b"\xff" * 65536)
            return None
        if path == "/unavailable.jpg":
            return _send(h, 503, b"try later", "text/plain")
        if path == "/redirect-private":
            return _redirect(h, f"http://localhost:{self.port}/img/bus-front.jpg")
        if path == "/redirect-metadata":
            return _redirect(h, "http://169.254.169.254/latest/meta-data/")
        if path == "/redirect-ok":
            return _redirect(h, "/img/bus-wide.jpg")
        return _send(h, 404, b"not found", "text/plain")


def _bomb_chunks() -> bytes:
    import struct
    import zlib
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    data = zlib.compress(b"\x00" * 1000)
    idat = b"IDAT" + data
    return (struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
            + struct.pack(">I", len(data)) + idat + struct.pack(">I", zlib.crc32(idat))
            + struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND")))


def _send(h, status, body, ctype):
    h.send_response(status)
    h.send_header("Content-Type", ctype)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


def _redirect(h, location):
    h.send_response(302)
    h.send_header("Location", location)
    h.send_header("Content-Length", "0")
    h.end_headers()


@pytest.fixture
def edge_server(sample_images):
    root, _ = sample_images
    routes = Routes({p.name: p.read_bytes() for p in root.iterdir()})

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - stdlib name
            try:
                routes.handle(self)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    routes.port = httpd.server_address[1]
    routes.base = f"http://127.0.0.1:{routes.port}"
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield routes
    httpd.shutdown()
    httpd.server_close()
