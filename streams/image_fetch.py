"""Fetch product images over HTTP without becoming an SSRF proxy.

Every hop (the URL and each redirect) is refused if its host is, or resolves to, a loopback,
private, link-local (incl. cloud metadata 169.254.169.254), multicast, reserved or unspecified
address, unless the operator allowed private targets or named hosts (tests and the local demo
allow their own 127.0.0.1 image server).

The check sits in the connector's resolver (`_PublicResolver`): the addresses it checked are the
only ones the connection may use, so a DNS server that answers differently on a second lookup
(DNS rebinding) gets nowhere. IP literals never reach a resolver and are checked before the
request. Bodies are streamed with a hard size cap; the content type must be an image. A URL with
credentials (`user:password@host`), given or in a redirect, is refused before any request: they
would go to the image host as an Authorization header.

One slow host must not stall anyone else's images: a fetch as a whole (waiting for a connection,
every redirect and retry, every read) ends at `deadline_s`, however the host dribbles its bytes;
each host gets at most `max_per_host` of the `max_connections` connections (aiohttp's own pool
limits, so waiting for a slow host holds no slot another host could use); and a host that ran past
the deadline is not asked again for `host_cooldown_s` by the same caller scope (the worker passes the
tenant; its further images there fail at once, transiently, and are retried later), so one slow host
costs a tenant's batch one deadline, not one per image, and other tenants on the same host (a shared
CDN) are not cooled down with it. Transient failures (5xx, 429, refused or reset connections, read
timeouts) are retried within the deadline.

aiohttp rather than httpx: measured on the ingest benchmark's 24 KB JPEGs from a local server,
32 at a time, httpx spent 3.3 ms of CPU per image (its connection pool re-checks every pooled
connection on each request) and aiohttp 0.33 ms; the worker fetches on the event loop that also
feeds the models, so that CPU came out of the embedding budget.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import ResolveResult
from aiohttp.resolver import ThreadedResolver
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

log = logging.getLogger(__name__)

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Tries of one fetch for transient failures, all within the deadline; the backoff is short
# because a failure that outlasts it is recorded on the image and retried much later anyway.
ATTEMPTS = 3
_BACKOFF = wait_exponential_jitter(initial=0.2, max=1.0, jitter=0.2)
_CHUNK = 64 * 1024


class FetchError(Exception):
    """A failed fetch; `permanent` failures are recorded on the image, transient ones retried."""

    def __init__(self, reason: str, *, permanent: bool):
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


class _Refused(OSError):
    """Raised by the resolver for a host that resolves to a non-public address."""


class _CoolingDown(FetchError):
    """The host ran past the deadline a moment ago: not asked again yet (and not retried now)."""

    def __init__(self, reason: str):
        super().__init__(reason, permanent=False)


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, FetchError) and not exc.permanent and not isinstance(exc, _CoolingDown)


@dataclass(frozen=True)
class Fetched:
    url: str
    final_url: str
    content: bytes
    content_type: str


def _is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return not (
        ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved or ip.is_unspecified
    )


def _ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return None


class _PublicResolver(ThreadedResolver):
    """getaddrinfo, refusing a name if any of its addresses is not public (unless allowed)."""

    def __init__(self, allowed) -> None:
        super().__init__()
        self._allowed = allowed

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await super().resolve(host, port, family)
        if self._allowed(host):
            return results
        for r in results:
            ip = _ip_literal(r["host"])
            if ip is None or not _is_public(ip):
                raise _Refused(f"refused: {host} resolves to non-public address {r['host']}")
        return results


class ImageFetcher:
    """An HTTP client with a deadline, per-host limits, a size cap, limited redirects and SSRF checks.

    Create and use it inside one running event loop (the session is made on first use).
    """

    def __init__(
        self,
        *,
        timeout_s: float = 10.0,
        deadline_s: float = 15.0,
        max_bytes: int = 20 * 1024 * 1024,
        max_redirects: int = 3,
        allow_private: bool = False,
        allow_hosts: frozenset[str] = frozenset(),
        max_connections: int = 16,
        max_per_host: int = 8,
        host_cooldown_s: float = 60.0,
    ):
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self.allow_private = allow_private
        self.allow_hosts = frozenset(h.lower() for h in allow_hosts)
        self.deadline_s = deadline_s
        # Per read, per connect; the deadline bounds the whole (asyncio.timeout in fetch()).
        self.timeout = aiohttp.ClientTimeout(total=None, sock_connect=min(timeout_s, 5.0), sock_read=timeout_s)
        self.max_connections = max_connections
        self.max_per_host = max_per_host
        self.host_cooldown_s = host_cooldown_s
        self._slow_until: dict[tuple[str, str], float] = {}  # (scope, host) -> when it may be asked again
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_settings(cls, settings) -> ImageFetcher:
        """The worker's fetcher, configured from `core.settings.Settings`."""
        return cls(
            timeout_s=settings.fetch_timeout_s,
            deadline_s=settings.fetch_deadline_s,
            max_bytes=settings.max_image_bytes,
            allow_private=settings.fetch_allow_private,
            allow_hosts=settings.fetch_allowed_hosts,
            max_connections=settings.fetch_connections,
            max_per_host=settings.fetch_per_host,
            host_cooldown_s=settings.fetch_host_cooldown_s,
        )

    def _allowed(self, host: str) -> bool:
        return self.allow_private or host.lower() in self.allow_hosts

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self.max_connections,
                limit_per_host=self.max_per_host,
                resolver=_PublicResolver(self._allowed),
                ttl_dns_cache=10,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self.timeout,
                trust_env=False,  # no proxy from the environment
                headers={"User-Agent": "vitrine-image-fetcher/0.2"},
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _check_url(self, url: str) -> None:
        parts = urlsplit(url)
        if "@" in parts.netloc:  # checked first: the reasons below quote the URL
            raise FetchError(
                f"refused: credentials in the URL of host {parts.hostname} (user:password@ is never "
                "sent to an image host)",
                permanent=True,
            )
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FetchError(f"unsupported URL {url!r}: only http(s) with a host", permanent=True)
        ip = _ip_literal(parts.hostname)  # names are checked by the resolver, literals here
        if ip is not None and not self._allowed(parts.hostname) and not _is_public(ip):
            raise FetchError(f"refused: {parts.hostname} is a non-public address", permanent=True)

    async def fetch(self, url: str, *, scope: str | None = None) -> Fetched:
        """GET an image within the deadline, following at most `max_redirects` checked redirects.

        With a `scope` (the worker's is the tenant), a host that ran past the deadline is cooled down
        for later fetches of the same scope; without one (a shopper's search by URL) it is not.
        """
        self._check_url(url)  # refusals cost nothing and are not retried
        hop = {"scope": scope, "host": urlsplit(url).hostname or ""}  # the host talked to when the deadline hits
        deadline = asyncio.timeout(self.deadline_s)
        try:
            async with deadline:
                async for attempt in AsyncRetrying(
                    stop=stop_after_attempt(ATTEMPTS), wait=_BACKOFF, retry=retry_if_exception(_retryable), reraise=True
                ):
                    with attempt:
                        return await self._fetch_once(url, hop)
        except TimeoutError:
            if not deadline.expired():  # some other timeout that escaped the client's exceptions
                raise FetchError(f"timed out fetching {url}", permanent=False) from None
            if scope is not None:
                self._cool_down(scope, hop["host"])
            raise FetchError(f"deadline exceeded: over {self.deadline_s:g} s fetching {url}", permanent=False) from None
        raise AssertionError("unreachable: the retry loop returns or raises")

    def _cool_down(self, scope: str, host: str) -> None:
        now = time.monotonic()
        if len(self._slow_until) > 1024:  # many slow hosts: forget the cooled-down ones
            self._slow_until = {k: t for k, t in self._slow_until.items() if t > now}
        self._slow_until[(scope, host)] = now + self.host_cooldown_s
        log.info(
            "image host %s exceeded the %g s deadline; not asked again for %g s (scope %r)",
            host,
            self.deadline_s,
            self.host_cooldown_s,
            scope,
        )

    def _cooling(self, scope: str | None, host: str) -> None:
        until = None if scope is None else self._slow_until.get((scope, host))
        if until is None:
            return
        if time.monotonic() < until:
            raise _CoolingDown(
                f"cooling down: {host} exceeded the {self.deadline_s:g} s deadline less than "
                f"{self.host_cooldown_s:g} s ago, not asked again yet"
            )
        del self._slow_until[(scope, host)]

    async def _fetch_once(self, url: str, hop: dict) -> Fetched:
        current = url
        client = self._client()
        for _ in range(self.max_redirects + 1):
            self._check_url(current)
            hop["host"] = urlsplit(current).hostname or ""
            self._cooling(hop["scope"], hop["host"])
            try:
                async with client.get(current, allow_redirects=False) as resp:
                    if resp.status in REDIRECT_STATUSES:
                        location = resp.headers.get("location")
                        if not location:
                            raise FetchError(f"redirect without Location from {current}", permanent=True)
                        current = urljoin(current, location)
                        continue
                    return await self._read(url, current, resp)
            except aiohttp.ClientConnectorError as exc:
                if isinstance(exc.os_error, _Refused):
                    raise FetchError(str(exc.os_error), permanent=True) from None
                if isinstance(exc, aiohttp.ClientConnectorDNSError):
                    raise FetchError(
                        f"cannot resolve {hop['host']}: {exc.os_error.strerror or exc.os_error}", permanent=False
                    ) from None
                raise FetchError(f"network error fetching {current}: {exc.os_error!r}", permanent=False) from None
            except (aiohttp.InvalidURL, ValueError) as exc:
                raise FetchError(f"invalid URL {current!r}: {exc}", permanent=True) from None
            except (aiohttp.ServerTimeoutError, aiohttp.ConnectionTimeoutError):
                raise FetchError(f"timed out fetching {current}", permanent=False) from None
            except aiohttp.ClientError as exc:
                raise FetchError(f"network error fetching {current}: {exc!r}", permanent=False) from None
        raise FetchError(f"more than {self.max_redirects} redirects from {url}", permanent=True)

    async def _read(self, url: str, current: str, resp: aiohttp.ClientResponse) -> Fetched:
        if resp.status >= 500 or resp.status == 429:
            raise FetchError(f"HTTP {resp.status} from {current}", permanent=False)
        if resp.status != 200:
            raise FetchError(f"HTTP {resp.status} from {current}", permanent=True)
        ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype and not ctype.startswith("image/") and ctype != "application/octet-stream":
            raise FetchError(f"not an image: content-type {ctype!r} from {current}", permanent=True)
        declared = resp.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_bytes:
            raise FetchError(f"image too large: {declared} bytes > {self.max_bytes}", permanent=True)
        buf = bytearray()
        async for chunk in resp.content.iter_chunked(_CHUNK):
            buf += chunk
            if len(buf) > self.max_bytes:
                raise FetchError(f"image too large: over {self.max_bytes} bytes", permanent=True)
        return Fetched(url=url, final_url=current, content=bytes(buf), content_type=ctype)
