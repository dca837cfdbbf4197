"""Issue #13 through the real worker: a trickling image host delays another tenant's product by one deadline at most.

Defaults keep it short (3 s deadline, a byte every 0.5 s). The figure in docs/reliability.md is the
same test with the production deadline and the issue's host (a byte every 2 s):
`SLOW_HOST_DEADLINE_S=15 SLOW_HOST_EVERY_S=2 pytest -s tests/streams/test_slow_image_host.py`.
"""

from __future__ import annotations

import json
import logging
import os
import time

import pytest
from kafka import KafkaProducer
from sqlalchemy import text

from db.tenants import create_tenant
from streams.topics import PRODUCT_EVENTS
from tests.helpers import settings_env, wait_for
from vitrine import procs

pytestmark = pytest.mark.integration
log = logging.getLogger(__name__)

DEADLINE_S = float(os.environ.get("SLOW_HOST_DEADLINE_S", "3"))
EVERY_S = float(os.environ.get("SLOW_HOST_EVERY_S", "0.5"))
GAP_S = float(os.environ.get("SLOW_HOST_GAP_S", "0"))  # > 0: the other product comes in a later batch
SLACK_S = 3.0  # models, the write and the notice, on a busy 2-core machine


def upsert(tenant: str, pid: str, urls: list[str]) -> tuple[str, bytes]:
    doc = {
        "event_id": f"{pid}-v1",
        "tenant_id": tenant,
        "type": "product.upserted",
        "product": {"id": pid, "version": 1, "title": pid, "image_urls": urls},
    }
    return f"{tenant}:{pid}", json.dumps(doc).encode()


def indexed_at(sessions, pid: str) -> float | None:
    with sessions() as s:
        at = s.scalar(text("SELECT extract(epoch FROM indexed_at) FROM products WHERE external_id = :p"), {"p": pid})
    return None if at is None else float(at)


def test_a_trickling_image_host_delays_another_tenants_product_by_one_deadline_at_most(
    settings, sessions, edge_server, tmp_path
):
    with sessions.begin() as s:
        create_tenant(s, "Acme", "acme")
        create_tenant(s, "Globex", "globex")
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    topic = settings.topic(PRODUCT_EVENTS.name)
    # The read timeout is the production one (10 s): a byte every EVERY_S never trips it.
    env = {**settings_env(settings), "VITRINE_FETCH_TIMEOUT_S": "10", "VITRINE_FETCH_DEADLINE_S": str(DEADLINE_S)}
    worker = procs.spawn(["worker"], env, tmp_path / "worker.log")
    try:
        key, value = upsert("acme", "warm-up", [f"{edge_server.base}/img/gift-blue.jpg"])
        producer.send(topic, key=key.encode(), value=value)
        producer.flush()
        wait_for(lambda: indexed_at(sessions, "warm-up"), 120, what="the worker ready")
        sent = time.time()
        slow = [f"{edge_server.base}/trickle/a.jpg?every={EVERY_S}", f"{edge_server.base}/img/bus-front.jpg"]
        key, value = upsert("acme", "slow", slow)
        producer.send(topic, key=key.encode(), value=value)
        producer.flush()
        time.sleep(GAP_S)
        key, value = upsert("globex", "other", [f"{edge_server.base}/img/bus-wide.jpg"])
        producer.send(topic, key=key.encode(), value=value)
        producer.flush()
        wait_for(
            lambda: indexed_at(sessions, "other") and indexed_at(sessions, "slow"),
            DEADLINE_S + 60,
            what="both products indexed",
        )
    finally:
        procs.stop(worker)
        producer.close()
    other_s, slow_s = indexed_at(sessions, "other") - sent, indexed_at(sessions, "slow") - sent
    log.warning(
        "slow image host: other tenant indexed %.1f s, slow product %.1f s after it was sent "
        "(deadline %g s, a byte every %g s, gap %g s)",
        other_s,
        slow_s,
        DEADLINE_S,
        EVERY_S,
        GAP_S,
    )
    assert other_s < DEADLINE_S + GAP_S + SLACK_S, other_s
    with sessions() as s:
        images = dict(
            s.execute(
                text(
                    "SELECT url, status FROM product_images pi JOIN products p "
                    "ON p.id = pi.product_id WHERE p.external_id = 'slow'"
                )
            ).all()
        )
        items = s.scalar(
            text("SELECT count(*) FROM items i JOIN products p ON p.id = i.product_id WHERE p.external_id = 'slow'")
        )
    assert images == {slow[0]: "pending", slow[1]: "ok"} and items == 1  # indexed without its slow image
