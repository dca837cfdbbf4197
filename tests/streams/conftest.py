"""An image server with misbehaving routes and a fake DNS, for the fetch and ingest tests (the process edge)."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from streams import image_fetch


class Routes:
    """What the server answers; tests may change `mutable` between events."""

    def __init__(self, photos: dict[str, bytes]):
        self.photos = photos
        self.mutable = photos["bus-front.jpg"]
        self.hits: dict[str, int] = {}
        self.authorization: dict[str, str | None] = {}  # path -> the Authorization header it was sent
        self.port = 0
        self.closing = threading.Event()  # set at teardown: trickling handlers stop
        self.trickling = self.most_trickling = 0  # trickle responses in progress now, and at most
        self._lock = threading.Lock()
        # 100,000 x 100,000 pixels of one colour: a few hundred bytes of PNG, 30 GB decoded.
        self.bomb = b"\x89PNG\r\n\x1a\n" + _bomb_chunks()

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        path = h.path.split("?")[0]
        query = {k: v[0] for k, v in parse_qs(urlsplit(h.path).query).items()}
        self.hits[path] = self.hits.get(path, 0) + 1
        self.authorization[path] = h.headers.get("Authorization")
        name = path.rsplit("/", 1)[-1]
        if path.startswith("/img/") and name in self.photos:
            return _send(h, 200, self.photos[name], "image/jpeg")
        if path == "/mutable.jpg":  # `mutable = None`: the host is down for now
            if self.mutable is None:
                return _send(h, 503, b"try later", "text/plain")
            return _send(h, 200, self.mutable, "image/jpeg")
        if path == "/slow.jpg":
            time.sleep(6)
            return _send(h, 200, self.photos["bus-front.jpg"], "image/jpeg")
        if path.startswith("/trickle/"):  # one byte every `every` seconds: no read timeout ever trips
            return self._trickle(h, self.photos["bus-front.jpg"], float(query.get("every", "0.5")))
        if path.startswith("/flaky/") and name in self.photos:  # 503 for the first `fail` requests of the path
            if self.hits[path] <= int(query.get("fail", "1")):
                return _send(h, 503, b"try later", "text/plain")
            return _send(h, 200, self.photos[name], "image/jpeg")
        if path == "/redirect-userinfo":
            return _redirect(h, f"http://shop:secret@127.0.0.1:{self.port}/img/bus-front.jpg")
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

    def _trickle(self, h: BaseHTTPRequestHandler, body: bytes, every: float) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "image/jpeg")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        with self._lock:
            self.trickling += 1
            self.most_trickling = max(self.most_trickling, self.trickling)
        try:
            for i in range(len(body)):
                h.wfile.write(body[i : i + 1])
                h.wfile.flush()
                if self.closing.wait(every):
                    return
        finally:
            with self._lock:
                self.trickling -= 1


def _bomb_chunks() -> bytes:
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    data = zlib.compress(b"\x00" * 1000)
    idat = b"IDAT" + data
    return (
        struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
        + struct.pack(">I", len(data))
        + idat
        + struct.pack(">I", zlib.crc32(idat))
        + struct.pack(">I", 0)
        + b"IEND"
        + struct.pack(">I", zlib.crc32(b"IEND"))
    )


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
    routes.closing.set()
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def fake_dns(monkeypatch):
    """Replace the system resolver under the fetcher's checks: name -> list of answers (one per lookup)."""
    answers: dict[str, list[str]] = {}
    lookups: list[str] = []

    async def resolve(self, host, port=0, family=socket.AF_INET):
        lookups.append(host)
        queue = answers[host]
        ip = queue.pop(0) if len(queue) > 1 else queue[0]
        return [{"hostname": host, "host": ip, "port": port, "family": socket.AF_INET, "proto": 0, "flags": 0}]

    monkeypatch.setattr(image_fetch.ThreadedResolver, "resolve", resolve)
    return answers, lookups
