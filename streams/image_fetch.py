"""Fetch product images over HTTP without becoming an SSRF proxy.

Every hop (the URL and each redirect) is resolved first and refused if any address is
loopback, private, link-local (incl. cloud metadata 169.254.169.254), multicast, reserved or
unspecified, unless the operator allowed private targets or named hosts (tests and the local
demo allow their own 127.0.0.1 image server).

Known gap: the check resolves the name, then httpx resolves it again to connect, so a DNS
server that answers differently the second time (rebinding) is not stopped; pinning the
checked address in a custom transport would close it.
Bodies are streamed with a hard size cap; the content type must be an image.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx

log = logging.getLogger(__name__)


class FetchError(Exception):
    """A failed fetch; `permanent` failures are recorded on the image, transient ones retried."""

    def __init__(self, reason: str, *, permanent: bool):
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


@dataclass(frozen=True)
class Fetched:
    url: str
    final_url: str
    content: bytes
    content_type: str


def _is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
                or ip.is_reserved or ip.is_unspecified)


class ImageFetcher:
    """An httpx client with timeouts, a size cap, limited redirects and SSRF checks."""

    def __init__(self, *, timeout_s: float = 10.0, max_bytes: int = 20 * 1024 * 1024,
                 max_redirects: int = 3, allow_private: bool = False, allow_hosts: frozenset[str] = frozenset()):
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self.allow_private = allow_private
        self.allow_hosts = frozenset(h.lower() for h in allow_hosts)
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)), follow_redirects=False,
            headers={"User-Agent": "vitrine-image-fetcher/0.1"},
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _check_host(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FetchError(f"unsupported URL {url!r}: only http(s) with a host", permanent=True)
        if self.allow_private or parts.hostname.lower() in self.allow_hosts:
            return
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(parts.hostname, parts.port or 443,
                                                                type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise FetchError(f"cannot resolve {parts.hostname}: {exc.strerror}", permanent=False) from None
        for info in infos:
            ip = ipaddress.ip_address(info[4][0].split("%")[0])
            if not _is_public(ip):
                raise FetchError(f"refused: {parts.hostname} resolves to non-public address {ip}", permanent=True)

    async def fetch(self, url: str) -> Fetched:
        """GET an image, following at most `max_redirects` checked redirects."""
        current = url
        for _ in range(self.max_redirects + 1):
            await self._check_host(current)
            try:
                async with self._client.stream("GET", current) as resp:
                    if resp.is_redirect:
                        location = resp.headers.get("location")
                        if not location:
                            raise FetchError(f"redirect without Location from {current}", permanent=True)
                        current = urljoin(current, location)
                        continue
                    return await self._read(url, current, resp)
            except httpx.TimeoutException:
                raise FetchError(f"timed out fetching {current}", permanent=False) from None
            except httpx.TransportError as exc:
                raise FetchError(f"network error fetching {current}: {exc!r}", permanent=False) from None
        raise FetchError(f"more than {self.max_redirects} redirects from {url}", permanent=True)

    async def _read(self, url: str, current: str, resp: httpx.Response) -> Fetched:
        if resp.status_code >= 500 or resp.status_code == 429:
            raise FetchError(f"HTTP {resp.status_code} from {current}", permanent=False)
        if resp.status_code != 200:
            raise FetchError(f"HTTP {resp.status_code} from {current}", permanent=True)
        ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype and not ctype.startswith("image/") and ctype != "application/octet-stream":
            raise FetchError(f"not an image: content-type {ctype!r} from {current}", permanent=True)
        declared = resp.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_bytes:
            raise FetchError(f"image too large: {declared} bytes > {self.max_bytes}", permanent=True)
        buf = bytearray()
        async for chunk in resp.aiter_bytes():
            buf += chunk
            if len(buf) > self.max_bytes:
                raise FetchError(f"image too large: over {self.max_bytes} bytes", permanent=True)
        return Fetched(url=url, final_url=current, content=bytes(buf), content_type=ctype)
