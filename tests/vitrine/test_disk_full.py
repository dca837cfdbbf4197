"""Disk full on the data dir: the API answers 503 (never 500, never 202 for what was not stored); 0 lost after.

`vitrine up`'s stack (Postgres and the durable broker, `vitrine.stack.EmbeddedStack`) runs with its
data dir on a small tmpfs of its own; a ballast file fills it until the kernel says ENOSPC, so
SeaweedFS and Postgres meet the very error a full disk gives them. A crash after it (SIGKILL) loses none of
what was acknowledged. Mounting needs root (or
CAP_SYS_ADMIN), as CI has; elsewhere the test is skipped with that reason.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from core.settings import Settings
from db.session import create_db_engine, session_factory
from db.tenants import create_tenant
from recommender import signing
from recommender.app import create_app
from streams.sync_producer import read_topic
from streams.topics import INTERACTIONS, PRODUCT_EVENTS
from tests.helpers import wait_for
from vitrine.stack import EmbeddedStack

pytestmark = pytest.mark.integration
log = logging.getLogger(__name__)

FS_SIZE = "160m"  # Postgres' initdb and first WAL segments take ~60 MB
PER_POST = 200  # events per request: ~60 KB, more than the slack left in the last pages of the files


@pytest.fixture
def small_disk(state_dir):
    """A directory on a tmpfs of FS_SIZE, unmounted afterwards; skips where mounting is not allowed."""
    mount_point = state_dir / f"small-disk-{uuid.uuid4().hex[:8]}"  # pgserver wants a project-owned dir
    mount_point.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={FS_SIZE},mode=0755", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        mount_point.rmdir()
        pytest.skip(f"cannot mount a small tmpfs here (needs root or CAP_SYS_ADMIN): {res.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)
        mount_point.rmdir()


def fill(directory) -> int:
    """Write a ballast file in `directory` until the file system is full; its size in bytes."""
    written = 0
    with open(directory / "ballast", "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
                written += 1 << 20
        except OSError as exc:
            assert exc.errno == 28, exc  # ENOSPC
    return written


def catalog_body(batch: int) -> bytes:
    events = [
        {
            "event_id": f"c{batch}-{i}",
            "tenant_id": "acme",
            "type": "product.upserted",
            "product": {"id": f"p{batch}-{i}", "version": 1, "title": "Shirt " * 40, "image_urls": []},
        }
        for i in range(PER_POST)
    ]
    return json.dumps(events).encode()


def interactions_body(batch: int) -> list[dict]:
    now = datetime.now(UTC).isoformat()
    return [
        {"event_id": f"i{batch}-{i}", "type": "click", "user_id": "u" * 200, "product_id": "p", "occurred_at": now}
        for i in range(PER_POST)
    ]


def test_a_full_data_dir_is_answered_503_and_nothing_acknowledged_is_lost(small_disk):
    data = small_disk / "data"
    data.mkdir()
    settings = Settings(
        data_dir=data,
        kafka_bootstrap="",
        database_url="",
        kafka_port=0,
        broker_storage="durable",
        topic_partitions=1,
        kafka_ack_timeout_s=2.0,
    )
    stack = EmbeddedStack(settings)
    resolved = stack.start()
    try:
        engine = create_db_engine(resolved.database_url)
        with session_factory(engine).begin() as s:
            creds = create_tenant(s, "Acme", "acme")
        engine.dispose()

        def post_catalog(client, batch):
            body = catalog_body(batch)
            headers = {
                "X-Vitrine-Tenant": "acme",
                "Content-Type": "application/json",
                signing.HEADER: signing.sign(creds.webhook_secret, body),
            }
            return client.post("/v1/catalog/events", content=body, headers=headers)

        def post_events(client, batch):
            return client.post(
                "/v1/events", json=interactions_body(batch), headers={"X-Vitrine-Key": creds.storefront_key}
            )

        answers: dict[str, list[int]] = {"catalog": [], "events": []}
        accepted: dict[str, set[int]] = {"catalog": set(), "events": set()}
        with TestClient(create_app(resolved)) as client:
            for batch in range(2):  # before: accepted
                for kind, post in (("catalog", post_catalog), ("events", post_events)):
                    assert post(client, batch).status_code == 202
                    accepted[kind].add(batch)
            ballast = fill(data)
            log.info("data dir full after %d MB of ballast", ballast >> 20)
            for batch in range(2, 4):  # while full
                for kind, post in (("catalog", post_catalog), ("events", post_events)):
                    resp = post(client, batch)
                    answers[kind].append(resp.status_code)
                    assert resp.status_code in (202, 503), resp.text  # never a 500
                    if resp.status_code == 202:
                        accepted[kind].add(batch)  # it fit into pages already allocated: stored all the same
                    else:
                        assert resp.headers["Retry-After"]
                        log.info("%s answered 503 while full: %s", kind, resp.json()["detail"])
            log.info("answers while full: %s", answers)
            assert 503 in answers["catalog"] and 503 in answers["events"]
            (data / "ballast").unlink()
            freed = time.monotonic()
            for batch in range(2, 6):  # after: a retry of each refused request is accepted
                for kind, post in (("catalog", post_catalog), ("events", post_events)):
                    if batch not in accepted[kind]:
                        wait_for(lambda p=post, b=batch: p(client, b).status_code == 202, 60, interval_s=1.0)
                        accepted[kind].add(batch)
                        log.info(
                            "%s batch %d accepted %.1f s after space returned", kind, batch, time.monotonic() - freed
                        )

        # Nothing acknowledged is lost: every accepted request's events are in the topics (a retried one may be
        # there twice: at least once).
        # A crash right after: SIGKILL Tansu and SeaweedFS (what was acknowledged must be on disk, not in a
        # buffer), then the broker again on the same data. A SIGTERM would do too, but after a disk-full episode
        # `weed mini` no longer exits on one (its filer's metadata-log flush hangs) and is killed after 15 s.
        for proc in (stack.broker.tansu.proc, stack.broker.s3.proc):
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        stack.broker.start()

        def event_ids(logical: str) -> Counter:
            topic = resolved.topic(logical)
            return Counter(json.loads(r.value)["event_id"] for r in read_topic(resolved.kafka_bootstrap, topic))

        catalog, events = event_ids(PRODUCT_EVENTS.name), event_ids(INTERACTIONS.name)
        for batch in range(6):
            assert all(catalog[f"c{batch}-{i}"] >= 1 for i in range(PER_POST)), batch
            assert all(events[f"i{batch}-{i}"] >= 1 for i in range(PER_POST)), batch
        assert len(catalog) == len(events) == 6 * PER_POST
    finally:
        stack.stop()
