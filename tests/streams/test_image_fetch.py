"""The image fetcher against a local server with misbehaving routes; DNS is faked at the process edge."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from streams import image_fetch
from streams.embedded_broker import free_port
from streams.image_fetch import FetchError, ImageFetcher


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
    got = fetch(
        f"http://images.shop.example:{edge_server.port}/img/bus-wide.jpg",
        allow_hosts=frozenset({"images.shop.example"}),
    )
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


@pytest.mark.parametrize(
    "url, reason",
    [
        ("http://10.0.0.7/a.jpg", "refused: 10.0.0.7 is a non-public address"),
        ("http://[::1]:9/a.jpg", "refused: ::1 is a non-public address"),
        ("http://[::ffff:169.254.169.254]/latest/meta-data/", "non-public address"),
        ("ftp://example.com/a.jpg", "unsupported URL"),
        ("file:///etc/passwd", "unsupported URL"),
    ],
)
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


def test_a_trickling_host_costs_at_most_the_deadline(edge_server):
    # One byte every 0.5 s never trips the 3 s read timeout; before the deadline such a fetch took
    # 4 read timeouts (12 s here, 40 s with the defaults) and then failed anyway.
    started = time.monotonic()
    with pytest.raises(FetchError) as err:
        fetch(f"{edge_server.base}/trickle/a.jpg", allow_hosts=frozenset({"127.0.0.1"}), timeout_s=3.0, deadline_s=1.5)
    took = time.monotonic() - started
    assert not err.value.permanent and "deadline exceeded: over 1.5 s" in err.value.reason
    assert 1.5 <= took < 2.5, took  # the deadline, plus the event loop's start and the cancellation


def test_a_slow_host_cannot_hold_other_hosts_fetches(edge_server, fake_dns):
    # Four connections in all, two per host: eight trickling fetches of slow.example hold two of
    # them; fast.example's images come through the other two at once, not after the deadline.
    answers, _ = fake_dns
    answers["slow.example"] = answers["fast.example"] = ["127.0.0.1"]
    port = edge_server.port

    async def main():
        fetcher = ImageFetcher(
            allow_hosts=frozenset({"slow.example", "fast.example"}), deadline_s=3.0, max_connections=4, max_per_host=2
        )
        try:
            slow = [
                asyncio.ensure_future(fetcher.fetch(f"http://slow.example:{port}/trickle/{i}.jpg")) for i in range(8)
            ]
            await asyncio.sleep(0.3)  # the slow fetches are connected and trickling
            t0 = time.monotonic()
            fast = await asyncio.gather(
                *(
                    fetcher.fetch(f"http://fast.example:{port}/img/{n}")
                    for n in ("bus-front.jpg", "bus-wide.jpg", "gift-blue.jpg")
                )
            )
            fast_s = time.monotonic() - t0
            slow_outcomes = await asyncio.gather(*slow, return_exceptions=True)
            return fast, fast_s, slow_outcomes
        finally:
            await fetcher.aclose()

    fast, fast_s, slow_outcomes = asyncio.run(main())
    assert [f.content for f in fast] == [
        edge_server.photos[n] for n in ("bus-front.jpg", "bus-wide.jpg", "gift-blue.jpg")
    ]
    assert fast_s < 1.0, fast_s  # without per-host limits: ~2.7 s, until the slow fetches hit the deadline
    assert all(isinstance(o, FetchError) and not o.permanent for o in slow_outcomes)
    assert edge_server.most_trickling == 2  # never more than two slow.example requests at once


def test_after_a_deadline_the_host_cools_down_for_that_scope_only(edge_server, fake_dns):
    answers, _ = fake_dns
    answers["slow.example"] = answers["fast.example"] = ["127.0.0.1"]
    port = edge_server.port

    async def main():
        fetcher = ImageFetcher(
            allow_hosts=frozenset({"slow.example", "fast.example"}), deadline_s=1.0, host_cooldown_s=60.0
        )
        try:
            first = await asyncio.gather(
                fetcher.fetch(f"http://slow.example:{port}/trickle/a.jpg", scope="acme"), return_exceptions=True
            )
            t0 = time.monotonic()
            second = await asyncio.gather(
                fetcher.fetch(f"http://slow.example:{port}/img/bus-front.jpg", scope="acme"), return_exceptions=True
            )
            second_s = time.monotonic() - t0
            other_host = await fetcher.fetch(f"http://fast.example:{port}/img/bus-front.jpg", scope="acme")
            other_scope = await fetcher.fetch(f"http://slow.example:{port}/img/bus-wide.jpg", scope="globex")
            no_scope = await fetcher.fetch(f"http://slow.example:{port}/img/gift-blue.jpg")
            return first[0], second[0], second_s, other_host, other_scope, no_scope
        finally:
            await fetcher.aclose()

    first, second, second_s, other_host, other_scope, no_scope = asyncio.run(main())
    assert isinstance(first, FetchError) and "deadline" in first.reason
    assert isinstance(second, FetchError) and not second.permanent and second_s < 0.1
    assert "slow.example exceeded the 1 s deadline" in second.reason
    assert edge_server.hits["/img/bus-front.jpg"] == 1  # only fast.example's request reached the server
    assert other_host.content == edge_server.photos["bus-front.jpg"]
    # Another scope (the worker's is the tenant) still gets the host: a shared CDN is not closed to all;
    # nor is it to a fetch without a scope (the API's search by URL: no cool-down at all).
    assert other_scope.content == edge_server.photos["bus-wide.jpg"]
    assert no_scope.content == edge_server.photos["gift-blue.jpg"]


def test_5xx_is_retried_within_the_deadline(edge_server):
    allow = frozenset({"127.0.0.1"})
    got = fetch(f"{edge_server.base}/flaky/bus-wide.jpg?fail=2", allow_hosts=allow)
    assert got.content == edge_server.photos["bus-wide.jpg"] and edge_server.hits["/flaky/bus-wide.jpg"] == 3
    with pytest.raises(FetchError) as err:
        fetch(f"{edge_server.base}/flaky/gift-blue.jpg?fail=99", allow_hosts=allow)
    assert not err.value.permanent and "HTTP 503" in err.value.reason
    assert edge_server.hits["/flaky/gift-blue.jpg"] == image_fetch.ATTEMPTS


def test_a_refused_connection_is_transient():
    with pytest.raises(FetchError) as err:
        fetch(f"http://127.0.0.1:{free_port()}/a.jpg", allow_hosts=frozenset({"127.0.0.1"}))
    assert not err.value.permanent and "network error" in err.value.reason


@pytest.mark.parametrize("path", ["/img/bus-front.jpg", "/redirect-userinfo"])
def test_credentials_in_a_url_are_never_sent(edge_server, path):
    # Directly, or in a redirect's Location: refused before any request carries them.
    url = (
        f"http://shop:secret@127.0.0.1:{edge_server.port}{path}"
        if path.startswith("/img")
        else f"{edge_server.base}{path}"
    )
    with pytest.raises(FetchError) as err:
        fetch(url, allow_hosts=frozenset({"127.0.0.1"}))
    assert err.value.permanent and "credentials" in err.value.reason and "secret" not in err.value.reason
    assert "/img/bus-front.jpg" not in edge_server.hits
    assert all(a is None for a in edge_server.authorization.values())
