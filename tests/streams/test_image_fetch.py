"""The image fetcher against a local server with misbehaving routes; DNS is faked at the process edge."""

from __future__ import annotations

import asyncio
import socket

import pytest

from streams import image_fetch
from streams.image_fetch import FetchError, ImageFetcher


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


def fetch(url, **options):
    async def main():
        fetcher = ImageFetcher(**options)
        try:
            return await fetcher.fetch(url)
        finally:
            await fetcher.aclose()
    return asyncio.run(main())


def test_a_name_resolving_to_a_private_address_is_refused_before_connecting(edge_server, fake_dns):
    answers, _ = fake_dns
    answers["shop.example"] = ["127.0.0.1"]
    with pytest.raises(FetchError) as err:
        fetch(f"http://shop.example:{edge_server.port}/img/bus-front.jpg?private")
    assert err.value.permanent and "refused: shop.example resolves to non-public address 127.0.0.1" in err.value.reason
    assert "/img/bus-front.jpg" not in edge_server.hits


def test_the_checked_address_is_the_one_connected_to(edge_server, fake_dns):
    # Allowed by name, resolved by the fake DNS to the local server: the fetch reaches it, so the
    # connection used the resolver's (checked) answer rather than a lookup of its own.
    answers, lookups = fake_dns
    answers["images.shop.example"] = ["127.0.0.1"]
    got = fetch(f"http://images.shop.example:{edge_server.port}/img/bus-wide.jpg",
                allow_hosts=frozenset({"images.shop.example"}))
    assert got.content == edge_server.photos["bus-wide.jpg"] and lookups == ["images.shop.example"]


def test_dns_rebinding_gets_no_second_lookup(edge_server, fake_dns):
    # A rebinding DNS answers a public address to the check and 127.0.0.1 afterwards. There is no
    # "afterwards": one lookup is both checked and connected to (here a public address that does
    # not answer, so the fetch fails as a transient network error), and the local server is never hit.
    answers, lookups = fake_dns
    answers["rebind.example"] = ["1.1.1.1", "127.0.0.1"]
    with pytest.raises(FetchError) as err:
        fetch(f"http://rebind.example:{edge_server.port}/img/gift-blue.jpg", timeout_s=1.0)
    assert not err.value.permanent
    assert lookups == ["rebind.example"] and "/img/gift-blue.jpg" not in edge_server.hits


@pytest.mark.parametrize("url, reason", [
    ("http://10.0.0.7/a.jpg", "refused: 10.0.0.7 is a non-public address"),
    ("http://[::1]:9/a.jpg", "refused: ::1 is a non-public address"),
    ("http://[::ffff:169.254.169.254]/latest/meta-data/", "non-public address"),
    ("ftp://example.com/a.jpg", "unsupported URL"),
    ("file:///etc/passwd", "unsupported URL"),
])
def test_literal_addresses_and_other_schemes_are_refused(url, reason):
    with pytest.raises(FetchError) as err:
        fetch(url)
    assert err.value.permanent and reason in err.value.reason


def test_the_size_cap_holds_with_and_without_a_declared_length(edge_server):
    allow = frozenset({"127.0.0.1"})
    with pytest.raises(FetchError) as err:
        fetch(f"{edge_server.base}/huge-undeclared.jpg", allow_hosts=allow, max_bytes=1_000_000)
    assert err.value.permanent and "over 1000000 bytes" in err.value.reason
    with pytest.raises(FetchError) as err:
        fetch(f"{edge_server.base}/img/bus-front.jpg", allow_hosts=allow, max_bytes=1000)
    assert err.value.permanent and "bytes > 1000" in err.value.reason  # refused from Content-Length


def test_an_unresolvable_name_is_transient(fake_dns, monkeypatch):
    async def fail(self, host, port=0, family=socket.AF_INET):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    monkeypatch.setattr(image_fetch.ThreadedResolver, "resolve", fail)
    with pytest.raises(FetchError) as err:
        fetch("http://no-such-host.example/a.jpg")
    assert not err.value.permanent and "cannot resolve no-such-host.example" in err.value.reason
