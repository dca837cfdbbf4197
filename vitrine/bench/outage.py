"""`vitrine bench outage`: stop Postgres for a while during an ingest; count what was lost, doubled or dead-lettered.

The acceptance run of #13 ("Postgres stopped for 60 s during a 1,000-product ingest: 0 dead letters,
all indexed within 60 s of its return, the API answered only 2xx or 503 meanwhile"), as a command anyone
can rerun. It runs on a Postgres and a (memory) broker of its own under DATA_DIR/bench-outage, so it
can stop that Postgres without touching a running `vitrine up`; the api and worker are real processes.

While Postgres is away the run keeps asking the API what a storefront and a retailer would (a catalog
webhook, recommendations, an interaction event, /healthz, about once a second each) and counts the
status codes. A webhook the API accepts (202) during the outage adds its product to those that must be
indexed.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import Counter
from contextlib import ExitStack

import httpx
from kafka import KafkaConsumer
from sqlalchemy import text

from core.settings import Settings
from db.embedded import EmbeddedPostgres
from db.migrate import upgrade
from streams.embedded_broker import ManagedBroker
from streams.topics import DEAD_LETTER, ensure_topics
from vitrine.bench.ingest import build_catalog, make_images
from vitrine.client import CatalogClient, StorefrontClient
from vitrine.image_server import ImageServer
from vitrine.local_system import start_local_system

log = logging.getLogger(__name__)

TENANT = "bench-outage"
POST_BATCH = 50


def _indexed(sessions) -> tuple[int, int, int]:
    """(products indexed, items, images with more than one item): the exactly-once check."""
    with sessions() as s:
        row = s.execute(
            text("""
            SELECT (SELECT count(*) FROM products WHERE tenant_id = :t AND indexed_at IS NOT NULL AND NOT deleted),
                   (SELECT count(*) FROM items WHERE tenant_id = :t),
                   (SELECT count(*) FROM (SELECT image_id FROM items WHERE tenant_id = :t GROUP BY image_id
                                          HAVING count(*) > 1) d)
        """),
            {"t": TENANT},
        ).one()
    return row[0], row[1], row[2]


def _dead_letters(settings: Settings) -> int:
    consumer = KafkaConsumer(
        settings.topic(DEAD_LETTER.name),
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=2000,
    )
    try:
        return sum(1 for _ in consumer)
    finally:
        consumer.close()


def _wait(condition, timeout_s: float, what: str, interval_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(interval_s)
    raise RuntimeError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def run_outage_bench(
    settings: Settings,
    *,
    products: int = 1000,
    outage_s: float = 60.0,
    stop_after: float = 0.1,
    seed: int = 0,
    timeout_s: float = 900,
) -> dict:
    """Ingest `products`, stop Postgres for `outage_s` once `stop_after` of them are indexed; return the figures."""
    from core.machine import machine_info

    root = settings.data_dir / "bench-outage"
    with ExitStack() as stack:
        names = make_images(root / "images", products * 2 + 10, seed=seed)
        server = stack.enter_context(ImageServer(root / "images"))
        run = uuid.uuid4().hex[:8]
        pg = EmbeddedPostgres(root / f"pg-{run}").start()
        stack.callback(pg.stop)
        upgrade(pg.url)
        broker = ManagedBroker(root / f"broker-{run}", storage="memory").start()
        stack.callback(broker.stop)
        own = settings.model_copy(
            update={
                "database_url": pg.url,
                "kafka_bootstrap": broker.bootstrap,
                "topic_prefix": f"o{run}.",
                "app_id": f"vitrine-outage-{run}",
            }
        )
        ensure_topics(own)
        system = start_local_system(own, stack, name="bench-outage")
        creds = system.fresh_tenant(TENANT, "Outage benchmark", default_arm="baseline")
        catalog = CatalogClient(system.base_url, creds.tenant_id, creds.webhook_secret)
        stack.callback(catalog.close)
        storefront = StorefrontClient(system.base_url, creds.storefront_key, timeout_s=10)
        stack.callback(storefront.close)

        events = build_catalog(products, names, server.base_url, version=1, tag="outage", seed=seed)
        for e in events:
            e["tenant_id"] = TENANT
        warm = events[:1]  # the worker loads its model before the measured run
        if catalog.send(warm).status_code != 202:
            raise RuntimeError("the warm-up webhook was refused")
        _wait(lambda: _indexed(system.sessions)[0] >= 1, 300, "the warm-up product indexed")

        started = time.monotonic()
        for i in range(1, len(events), POST_BATCH):
            resp = catalog.send(events[i : i + POST_BATCH])
            if resp.status_code != 202:
                raise RuntimeError(f"webhook answered {resp.status_code}: {resp.text[:300]}")
        posted_s = time.monotonic() - started
        _wait(
            lambda: _indexed(system.sessions)[0] >= max(2, int(stop_after * products)),
            timeout_s,
            f"{stop_after:.0%} of the products indexed",
            interval_s=0.05,
        )
        at_stop = _indexed(system.sessions)[0]
        system.engine.dispose()
        pg.stop()
        stopped = time.monotonic()
        log.info("postgres stopped with %d of %d products indexed", at_stop, products)

        answers: dict[str, Counter] = {k: Counter() for k in ("webhook", "recommendations", "events", "healthz")}
        accepted_during = []
        k = 0
        while time.monotonic() - stopped < outage_s:  # the outage itself: Postgres stays down this long
            k += 1
            extra = build_catalog(1, names, server.base_url, version=1, tag=f"during-{k}", seed=k)[0]
            extra.update(tenant_id=TENANT, product={**extra["product"], "id": f"during-{k}"})
            resp = catalog.send([extra])
            answers["webhook"][resp.status_code] += 1
            if resp.status_code == 202:
                accepted_during.append(extra["product"]["id"])
            answers["recommendations"][storefront.recommendations("p1", user_id="u").status_code] += 1
            answers["events"][
                storefront.events(
                    {"event_id": f"click-{k}", "type": "click", "user_id": "u", "product_id": "p1"}
                ).status_code
            ] += 1
            answers["healthz"][httpx.get(f"{system.base_url}/healthz", timeout=10).status_code] += 1
            time.sleep(1.0)
        pg.start()
        back = time.monotonic()
        expected = products + len(accepted_during)
        _wait(lambda: _indexed(system.sessions)[0] >= expected, timeout_s, f"all {expected} products indexed")
        indexed_after_s = time.monotonic() - back
        total_s = time.monotonic() - started
        time.sleep(3)  # a last look for late duplicates or dead letters (the worker has nothing left to do)
        indexed, items, doubled = _indexed(system.sessions)
        with system.sessions() as s:
            distinct_images = s.scalar(
                text("SELECT count(DISTINCT image_id) FROM items WHERE tenant_id = :t"), {"t": TENANT}
            )
        return {
            "settings": {
                "products": products,
                "outage_s": outage_s,
                "stop_after": stop_after,
                "broker": "memory (own)",
                "postgres": "embedded (own)",
            },
            "machine": machine_info(),
            "posted_s": round(posted_s, 2),
            "indexed_when_stopped": at_stop,
            "accepted_during_outage": len(accepted_during),
            "indexed": indexed,
            "lost": expected - indexed,
            "duplicated_items": doubled,
            "items": items,
            "images_with_items": distinct_images,
            "dead_letters": _dead_letters(own),
            "all_indexed_s_after_return": round(indexed_after_s, 1),
            "total_s": round(total_s, 1),
            "api_during_outage": {k: {str(code): n for code, n in sorted(v.items())} for k, v in answers.items()},
        }


def format_report(r: dict) -> str:
    """The figures as a short table (the CLI prints it; --json prints `r` itself)."""
    s = r["settings"]
    lines = [
        f"{s['products']} products, Postgres stopped for {s['outage_s']:.0f} s "
        f"once {r['indexed_when_stopped']} were indexed",
        f"indexed            {r['indexed']} (lost {r['lost']}, images with a doubled item {r['duplicated_items']})",
        f"dead letters       {r['dead_letters']}",
        f"all indexed        {r['all_indexed_s_after_return']} s after Postgres returned ({r['total_s']} s in all)",
        "API meanwhile      " + "; ".join(f"{k} {json.dumps(v)}" for k, v in r["api_during_outage"].items()),
    ]
    return "\n".join(lines)
