"""`vitrine catalog import|dead-letters|replay` and `vitrine status`, in-process, on the real broker and Postgres."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from kafka import KafkaProducer
from sqlalchemy import text
from typer.testing import CliRunner

from core.contracts import CatalogEvent, DeadLetter
from db.catalog import ImageResult, ItemRow, delete_product, upsert_product
from db.tenants import create_tenant
from streams.embedded_broker import free_port
from streams.topics import DEAD_LETTER, INTERACTIONS, PRODUCT_EVENTS
from tests.helpers import dead_letter, read_topic_records, settings_env
from vitrine.cli import app

pytestmark = pytest.mark.integration

runner = CliRunner()


def read_topic(settings, logical: str) -> list[tuple[str | None, bytes]]:
    """Every record of one of vitrine's topics (under the test's prefix)."""
    return read_topic_records(settings.kafka_bootstrap, settings.topic(logical))


@pytest.fixture
def env(settings, sessions, monkeypatch):
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("VITRINE_KAFKA_ACK_TIMEOUT_S", "2")  # an absent broker is reported within seconds
    with sessions.begin() as session:
        create_tenant(session, "Acme", "acme")
    return monkeypatch


def product(pid: str, version: int = 1, **extra) -> dict:
    return {
        "id": pid,
        "version": version,
        "title": f"Product {pid}",
        "image_urls": [f"https://cdn.example.com/{pid}.jpg"],
        **extra,
    }


def test_import_sends_the_good_lines_and_numbers_the_bad_ones(env, settings, tmp_path):
    other_tenant = {
        "event_id": "e-x",
        "tenant_id": "globex",
        "type": "product.deleted",
        "product": {"id": "p9", "version": 1},
    }
    lines = [
        json.dumps(product("p1")),
        "{not json",
        json.dumps(product("p2", price="-1")),
        json.dumps(product("p3", 2)),
        json.dumps(other_tenant),
        "",
        json.dumps({"event_id": "e-del", "type": "product.deleted", "product": {"id": "p4", "version": 7}}),
    ]
    feed = tmp_path / "feed.jsonl"
    feed.write_text("\n".join(lines) + "\n")

    result = runner.invoke(app, ["catalog", "import", str(feed), "--tenant", "acme", "--no-wait"])

    assert result.exit_code == 1, result.output
    assert "lines read  6" in result.stdout and "produced    3" in result.stdout and "bad         3" in result.stdout
    assert "line 2: invalid JSON" in result.stdout
    assert "line 3: price: Input should be greater than or equal to 0" in result.stdout
    assert "line 5: tenant_id: 'globex' is not the imported tenant 'acme'" in result.stdout
    sent = {key: json.loads(value) for key, value in read_topic(settings, PRODUCT_EVENTS.name)}
    assert sorted(sent) == ["acme:p1", "acme:p3", "acme:p4"]
    assert sent["acme:p1"]["event_id"] == "import:acme:p1:1" and sent["acme:p3"]["event_id"] == "import:acme:p3:2"
    assert sent["acme:p4"]["type"] == "product.deleted" and sent["acme:p4"]["event_id"] == "e-del"
    CatalogEvent.model_validate(sent["acme:p1"])  # what the worker will parse


def test_csv_import_with_dry_run_first(env, settings, tmp_path):
    feed = tmp_path / "feed.csv"
    feed.write_text(
        "id,version,title,price,currency,image_urls,colour\n"
        "c1,1,Lamp,12.50,EUR,https://cdn.example.com/a.jpg|https://cdn.example.com/b.jpg,red\n"
        "c2,1,Chair,40,EUR,,oak\n"
    )

    dry = runner.invoke(app, ["catalog", "import", str(feed), "--tenant", "acme", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "valid       2" in dry.stdout and read_topic(settings, PRODUCT_EVENTS.name) == []

    result = runner.invoke(app, ["catalog", "import", str(feed), "--tenant", "acme", "--no-wait"])
    assert result.exit_code == 0, result.output
    assert "produced    2" in result.stdout and "events/s" in result.stdout
    sent = {key: json.loads(value) for key, value in read_topic(settings, PRODUCT_EVENTS.name)}
    assert sent["acme:c1"]["product"]["image_urls"] == [
        "https://cdn.example.com/a.jpg",
        "https://cdn.example.com/b.jpg",
    ]
    assert sent["acme:c1"]["product"]["attributes"] == {"colour": "red"}


def test_import_refuses_an_unknown_tenant_and_an_absent_broker(env, settings, tmp_path):
    feed = tmp_path / "feed.jsonl"
    feed.write_text(json.dumps(product("p1")) + "\n")

    unknown = runner.invoke(app, ["catalog", "import", str(feed), "--tenant", "nobody"])
    assert unknown.exit_code == 1 and "unknown tenant 'nobody'" in unknown.output

    env.setenv("VITRINE_KAFKA_BOOTSTRAP", f"127.0.0.1:{free_port()}")
    down = runner.invoke(app, ["catalog", "import", str(feed), "--tenant", "acme"])
    assert down.exit_code == 3 and "unreachable" in down.output
    assert "Traceback" not in down.output


@pytest.fixture
def dead_letters(settings):
    records = [
        dead_letter("acme", "p1", "e-1", "ConnectError: image host down"),
        dead_letter("acme", "p2", "e-2", "OperationalError: database restarted\n" + "x" * 500),
        dead_letter("globex", "g1", "e-3", "ValueError: broken"),
    ]
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    for key, value in records:
        producer.send(settings.topic(DEAD_LETTER.name), key=key, value=value)
    producer.flush()
    producer.close()
    return records


def test_dead_letters_are_listed_per_tenant(env, dead_letters):
    everything = runner.invoke(app, ["catalog", "dead-letters", "--json"])
    assert everything.exit_code == 0, everything.output
    doc = json.loads(everything.stdout)
    assert doc["count"] == 3 and [d["event_id"] for d in doc["dead_letters"]] == ["e-1", "e-2", "e-3"]
    assert doc["dead_letters"][0]["attempts"] == 3 and doc["dead_letters"][0]["tenant_id"] == "acme"

    acme = runner.invoke(app, ["catalog", "dead-letters", "--tenant", "acme"])
    assert acme.exit_code == 0, acme.output
    assert "acme:p1" in acme.stdout and "ConnectError: image host down" in acme.stdout
    assert "globex" not in acme.stdout and "2 of 2 dead letter(s)" in acme.stdout
    assert "x" * 200 not in acme.stdout  # long errors are truncated to one table line

    newest = json.loads(runner.invoke(app, ["catalog", "dead-letters", "--limit", "1", "--json"]).stdout)
    assert [d["event_id"] for d in newest["dead_letters"]] == ["e-3"] and newest["total"] == 3


def test_replay_resends_the_original_payloads_with_their_keys(env, settings, dead_letters):
    unconfirmed = runner.invoke(app, ["catalog", "replay", "--tenant", "acme"], input="n\n")
    assert unconfirmed.exit_code == 1 and read_topic(settings, PRODUCT_EVENTS.name) == []

    one = runner.invoke(app, ["catalog", "replay", "--tenant", "acme", "--event-id", "e-2", "--yes"])
    assert one.exit_code == 0, one.output
    assert "replayed 1 event(s)" in one.stdout
    [(key, value)] = read_topic(settings, PRODUCT_EVENTS.name)
    assert key == "acme:p2" and value.decode() == DeadLetter.model_validate_json(dead_letters[1][1]).payload

    rest = runner.invoke(app, ["catalog", "replay", "--tenant", "acme", "--yes"])
    assert rest.exit_code == 0 and "replayed 2 event(s)" in rest.stdout
    keys = [k for k, _ in read_topic(settings, PRODUCT_EVENTS.name)]
    assert sorted(keys) == ["acme:p1", "acme:p2", "acme:p2"]  # globex's dead letter stayed put

    missing = runner.invoke(app, ["catalog", "replay", "--event-id", "nope", "--yes"])
    assert missing.exit_code == 1 and "not in the dead letters: nope" in missing.output


def _event(pid: str, version: int, type_: str = "product.upserted") -> CatalogEvent:
    return CatalogEvent(
        event_id=f"e-{pid}-{version}",
        tenant_id="acme",
        type=type_,
        product={"id": pid, "version": version, "title": pid},
    )


def test_status_counts_the_catalog_lag_and_dead_letters(env, settings, sessions, dead_letters):
    vector = np.ones(4, dtype=np.float32)
    items = [
        ItemRow("whole", (0, 0, 10, 10), "image", 1.0, vector),
        ItemRow("item", (1, 1, 5, 5), "shirt", 0.9, vector),
    ]
    with sessions.begin() as session:
        upsert_product(
            session,
            _event("p1", 1),
            [
                ImageResult(
                    "https://cdn.example.com/ok.jpg", 0, "ok", content_hash="h", width=10, height=10, items=items
                ),
                ImageResult("https://cdn.example.com/gone.jpg", 1, "failed", reason="HTTP 404"),
            ],
            model_key="test@1",
            dim=4,
        )
        upsert_product(
            session,
            _event("p2", 1),
            [
                ImageResult("https://cdn.example.com/gone2.jpg", 0, "failed", reason="HTTP 404"),
                ImageResult("https://cdn.example.com/page.html", 1, "failed", reason="not an image: text/html"),
            ],
            model_key="test@1",
            dim=4,
        )
        delete_product(session, _event("p3", 2, "product.deleted"))
    result = runner.invoke(app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    [acme] = doc["tenants"]
    assert {
        k: acme[k]
        for k in (
            "tenant_id",
            "products",
            "deleted",
            "images_ok",
            "images_pending",
            "images_failed",
            "items",
            "dead_letters",
        )
    } == {
        "tenant_id": "acme",
        "products": 2,
        "deleted": 1,
        "images_ok": 1,
        "images_pending": 0,
        "images_failed": 3,
        "items": 2,
        "dead_letters": 2,
    }
    assert acme["failure_reasons"] == [
        {"reason": "HTTP 404", "count": 2},
        {"reason": "not an image: text/html", "count": 1},
    ]
    assert doc["kafka"]["reachable"] and doc["kafka"]["dead_letters"] == 3
    assert doc["kafka"]["dead_letters_by_tenant"] == {"acme": 2, "globex": 1}

    table = runner.invoke(app, ["status"])
    assert table.exit_code == 0, table.output
    assert table.stdout.splitlines()[1].split() == ["acme", "2", "1", "1", "0", "3", "2", "2"]
    assert "failed: 2 x HTTP 404" in table.stdout and "dead letters   3" in table.stdout

    env.setenv("VITRINE_KAFKA_BOOTSTRAP", f"127.0.0.1:{free_port()}")
    down = runner.invoke(app, ["status"])
    assert down.exit_code == 3 and "acme" in down.stdout and "unreachable" in down.output


def test_status_reports_the_lag_of_the_worker_group(env, settings):
    for pid in ("n1", "n2"):  # two events no worker has consumed: a lag of 2
        # One import each: Tansu reports a batch's end offset as its base + 1, which would hide lag.
        feed = settings.data_dir / f"{pid}.jsonl"
        feed.write_text(json.dumps(product(pid)) + "\n")
        assert runner.invoke(app, ["catalog", "import", str(feed), "--tenant", "acme", "--no-wait"]).exit_code == 0
    result = runner.invoke(app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    kafka = json.loads(result.stdout)["kafka"]
    assert kafka["lag_error"] is None and kafka["lag"] == 2


# --- dead letters of the worker: per tenant, replayed to their own topics (#13) ------------------------


def worker_dead_letters(settings, sessions, *, interactions=(), catalog=()) -> list[DeadLetter]:
    """Run the worker's batch functions on the real database; write their dead letters as the worker does."""
    from streams.worker import dead_letter_record, process_batch, record_batch

    letters: list[DeadLetter] = []

    def collect(topic: str):
        async def dead_letter(key, value, error, attempts):
            letters.append(dead_letter_record(topic, key, value, error, attempts))

        return dead_letter

    async def run():
        if catalog:  # only events that fail validation: no indexer (models, images) is needed for them
            await process_batch(None, list(catalog), None, collect(settings.topic(PRODUCT_EVENTS.name)))
        if interactions:
            await record_batch(sessions, list(interactions), 3 * 86400, collect(settings.topic(INTERACTIONS.name)))

    asyncio.run(run())
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    for letter in letters:
        producer.send(
            settings.topic(DEAD_LETTER.name), key=letter.key.encode(), value=letter.model_dump_json().encode()
        )
    producer.flush()
    producer.close()
    return letters


def click(tenant: str, event_id: str, user: str, product: str) -> tuple[bytes, bytes]:
    body = {"event_id": event_id, "tenant_id": tenant, "type": "click", "user_id": user, "product_id": product}
    return f"{tenant}:{user}".encode(), json.dumps(body).encode()


@pytest.fixture
def refuses_poison(env, sessions):
    """Tenants acme and globex; the database refuses interactions with the product "poison" (a CHECK)."""
    with sessions.begin() as s:
        create_tenant(s, "Globex", "globex")
        s.execute(text("ALTER TABLE interaction_events ADD CONSTRAINT no_poison CHECK (product_id <> 'poison')"))
    return sessions


def test_a_tenants_dead_letters_hold_only_its_own_events_and_data(refuses_poison, settings):
    """Before: a mixed batch failed whole, every event of both tenants was dead-lettered, and each error listed
    the batch's rows: acme's listing showed globex's user and product ids, and globex had dead letters too."""
    batch = [click("globex", f"g{i}", f"globex-user-{i}", f"globex-product-{i}") for i in range(4)]
    batch.insert(2, click("acme", "a-bad", "acme-user", "poison"))
    worker_dead_letters(settings, refuses_poison, interactions=batch)

    globex = runner.invoke(app, ["catalog", "dead-letters", "--tenant", "globex", "--json"])
    assert globex.exit_code == 0, globex.output
    assert json.loads(globex.stdout)["total"] == 0
    acme = runner.invoke(app, ["catalog", "dead-letters", "--tenant", "acme", "--json"])
    [letter] = json.loads(acme.stdout)["dead_letters"]
    assert letter["key"] == "acme:acme-user" and letter["event_id"] == "a-bad" and "no_poison" in letter["error"]
    assert "globex" not in acme.stdout  # not in the error, not in the payload
    table = runner.invoke(app, ["catalog", "dead-letters", "--tenant", "acme"])
    assert "acme:acme-user" in table.stdout and "globex" not in table.stdout


def test_replay_sends_an_interaction_and_a_catalog_event_back_to_their_own_topics(refuses_poison, settings):
    """Before: replay sent every dead letter to the catalog topic, where an interaction only failed again."""
    bad_catalog = (
        b"acme:p9",
        json.dumps({"event_id": "c-bad", "tenant_id": "acme", "type": "product.upserted"}).encode(),
    )
    bad_click = click("acme", "i-bad", "acme-user", "poison")
    letters = worker_dead_letters(settings, refuses_poison, interactions=[bad_click], catalog=[bad_catalog])
    assert sorted(dl.topic for dl in letters) == sorted(settings.topic(t.name) for t in (PRODUCT_EVENTS, INTERACTIONS))

    result = runner.invoke(app, ["catalog", "replay", "--tenant", "acme", "--yes"])
    assert result.exit_code == 0, result.output
    assert f"replayed 1 event(s) to {settings.topic(PRODUCT_EVENTS.name)}" in result.stdout
    assert f"replayed 1 event(s) to {settings.topic(INTERACTIONS.name)}" in result.stdout
    assert read_topic(settings, PRODUCT_EVENTS.name) == [("acme:p9", bad_catalog[1])]
    assert read_topic(settings, INTERACTIONS.name) == [("acme:acme-user", bad_click[1])]  # byte for byte
