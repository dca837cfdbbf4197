"""Catalog commands: bulk import of feeds, dead letters and their replay; `vitrine status`.

Exit codes, for scripts: 0 all good; 1 bad input (bad feed lines, unknown tenant, bad arguments);
2 a service (Kafka, Postgres) is unreachable.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import typer

from vitrine.cli.app import app, catalog_app, fail, setup_logging
from vitrine.cli.stack import resolved_settings
from core.settings import Settings

UNREACHABLE = 2
PROGRESS_EVERY = 1000  # lines between progress-bar updates: per-line updates would cost more than parsing


@catalog_app.command("import")
def import_feed(
    path: Path = typer.Argument(..., help="A .jsonl or .csv feed (optionally .gz)"),
    tenant: str = typer.Option(..., "--tenant", "-t", help="Tenant id the products belong to"),
    fmt: str = typer.Option(None, "--format", "-f", help="jsonl | csv (default: from the file extension)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate the file only: no Kafka, no database"),
    show_errors: int = typer.Option(20, "--show-errors", min=0, help="How many bad lines to list"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Validate a feed line by line and produce its good lines to the product-events topic.

    JSONL: one object per line, a whole catalog event or just a product {id, version, title, ...};
    products get the event id import:TENANT:ID:VERSION, so importing a file twice changes nothing.
    CSV: a header row with id, version, title, category, price, currency, in_stock, image_urls
    (separated by |); any other column becomes an attribute. Bad lines are reported with their
    numbers and the good ones still go. Exit 0 if every line was produced, 1 if any was bad,
    2 if Kafka or Postgres is unreachable.
    """
    from streams.feed import FeedFormatError, feed_format, parse_feed
    from streams.sync_producer import BrokerUnreachable, SyncProducer
    from streams.topics import PRODUCT_EVENTS

    _setup_logging(verbose)
    try:
        fmt = feed_format(path, fmt)
    except FeedFormatError as exc:
        fail(str(exc))
    if not path.is_file():
        fail(f"no such file: {path}")

    producer = topic = None
    if not dry_run:
        settings = resolved_settings()
        _require_tenant(settings, tenant)
        try:
            producer = SyncProducer(settings.kafka_bootstrap, client_id=f"{settings.app_id}-import",
                                    timeout_s=settings.kafka_ack_timeout_s)
        except BrokerUnreachable as exc:
            fail(str(exc), UNREACHABLE)
        _ensure_topics(settings)
        topic = settings.topic(PRODUCT_EVENTS.name)

    read = good = bad = 0
    errors: list[str] = []
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if producer is not None:
            stack.enter_context(producer)
        raw = stack.enter_context(path.open("rb"))
        lines = stack.enter_context(gzip.open(raw)) if path.suffix.lower() == ".gz" else raw
        bar = stack.enter_context(typer.progressbar(length=path.stat().st_size, label=f"importing {path.name}",
                                                    file=sys.stderr, show_pos=False))
        try:
            for record in parse_feed(lines, tenant, fmt):
                read += 1
                if record.ok:
                    good += 1
                    if producer is not None:
                        producer.send(topic, record.event.key, record.event.model_dump_json().encode())
                else:
                    bad += 1
                    if len(errors) < show_errors:
                        errors.append(f"line {record.line}: {record.error}")
                if read % PROGRESS_EVERY == 0:
                    bar.update(raw.tell() - bar.pos)
            if producer is not None:
                producer.flush()  # the summary must only count what the broker acknowledged
        except FeedFormatError as exc:
            fail(f"{path.name}: {exc}")
        except (OSError, EOFError) as exc:  # a truncated .gz, an unreadable disk
            fail(f"cannot read {path}: {exc}")
        except BrokerUnreachable as exc:
            fail(f"{exc} ({producer.acked} of {good} events acknowledged before the failure)", UNREACHABLE)
        bar.update(bar.length - bar.pos)
    elapsed = time.perf_counter() - started

    typer.echo(f"lines read  {read}")
    typer.echo(f"{'valid' if dry_run else 'produced':<11} {good}{'  (dry run: nothing sent)' if dry_run else ''}")
    typer.echo(f"bad         {bad}")
    typer.echo(f"elapsed     {elapsed:.2f} s")
    rate, unit = (read, "lines/s (validated)") if dry_run else (good, "events/s (acknowledged)")
    typer.echo(f"rate        {rate / elapsed if elapsed > 0 else 0:.0f} {unit}")
    if errors:
        typer.echo(f"first {len(errors)} bad line(s):" if bad > len(errors) else "bad lines:")
        for line in errors:
            typer.echo(f"  {line}")
    raise typer.Exit(1 if bad else 0)


def _setup_logging(verbose: bool) -> None:
    setup_logging(verbose)
    if not verbose:  # kafka-python logs every failed connection attempt; the command says it in one line
        logging.getLogger("kafka").setLevel(logging.CRITICAL)


def _require_tenant(settings: Settings, tenant: str) -> None:
    """Exit with one line unless `tenant` exists (2 if Postgres cannot be reached)."""
    from sqlalchemy.exc import OperationalError

    from db.models import Tenant
    from db.session import create_db_engine, session_factory

    engine = create_db_engine(settings.database_url)
    try:
        with session_factory(engine)() as session:
            exists = session.get(Tenant, tenant) is not None
    except OperationalError as exc:
        fail(f"Postgres is unreachable: {str(exc.orig).strip().splitlines()[0]}", UNREACHABLE)
    finally:
        engine.dispose()
    if not exists:
        fail(f"unknown tenant {tenant!r} (create it with `vitrine tenant create`)")


def _ensure_topics(settings: Settings) -> None:
    """Create missing topics first: Tansu would auto-create them with its own partition count."""
    from kafka.errors import KafkaError

    from streams.topics import ensure_topics

    try:
        ensure_topics(settings)
    except (KafkaError, OSError) as exc:
        fail(f"Kafka at {settings.kafka_bootstrap} is unreachable: {exc}", UNREACHABLE)


@dataclass(frozen=True)
class DeadLetterRecord:
    """One record of the dead-letter topic, parsed as far as it goes."""

    partition: int
    offset: int
    key: str | None
    failed_at: str | None
    attempts: int | None
    error: str
    payload: str
    tenant_id: str | None
    event_id: str | None


def _parse_dead_letter(partition: int, offset: int, key: bytes | None, value: bytes) -> DeadLetterRecord:
    from pydantic import ValidationError

    from core.contracts import DeadLetter

    try:
        dl = DeadLetter.model_validate_json(value)
    except ValidationError:  # written by something else: keep it visible rather than hide it
        return DeadLetterRecord(partition, offset, key.decode(errors="replace") if key else None, None, None,
                                "unreadable dead-letter record", value.decode(errors="replace"), None, None)
    tenant_id = event_id = None
    with contextlib.suppress(ValueError):
        original = json.loads(dl.payload)
        if isinstance(original, dict):
            tenant_id, event_id = original.get("tenant_id"), original.get("event_id")
    if dl.key and ":" in dl.key:  # the key is authoritative: tenant:product_id
        tenant_id = dl.key.split(":", 1)[0]
    return DeadLetterRecord(partition, offset, dl.key, dl.failed_at.isoformat(timespec="seconds"), dl.attempts,
                            dl.error, dl.payload, str(tenant_id) if tenant_id else None,
                            str(event_id) if event_id else None)


def iter_dead_letters(settings: Settings) -> Iterator[DeadLetterRecord]:
    """Every record of the dead-letter topic, parsed; raises BrokerUnreachable."""
    from streams.sync_producer import read_topic
    from streams.topics import DEAD_LETTER

    for r in read_topic(settings.kafka_bootstrap, settings.topic(DEAD_LETTER.name),
                        timeout_s=settings.kafka_ack_timeout_s, client_id=f"{settings.app_id}-cli"):
        yield _parse_dead_letter(r.partition, r.offset, r.key, r.value)


@catalog_app.command("dead-letters")
def dead_letters(
    tenant: str = typer.Option(None, "--tenant", "-t", help="Only this tenant's dead letters"),
    limit: int = typer.Option(50, "--limit", "-n", min=1, help="Show at most the N newest"),
    as_json: bool = typer.Option(False, "--json", help='One JSON object {"dead_letters": [...], "count": n}'),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """List the events the worker gave up on: when, which key, how many attempts, and why."""
    from streams.sync_producer import BrokerUnreachable

    _setup_logging(verbose)
    settings = resolved_settings()
    shown: deque[DeadLetterRecord] = deque(maxlen=limit)  # the newest N, without holding the whole topic
    total = 0
    try:
        for record in iter_dead_letters(settings):
            if tenant is None or record.tenant_id == tenant:
                shown.append(record)
                total += 1
    except BrokerUnreachable as exc:
        fail(str(exc), UNREACHABLE)
    rows = sorted(shown, key=lambda r: (r.failed_at or "", r.partition, r.offset))
    if as_json:
        typer.echo(json.dumps({"dead_letters": [asdict(r) for r in rows], "count": len(rows), "total": total}))
        return
    if not rows:
        typer.echo("no dead letters" + (f" for tenant {tenant}" if tenant else ""))
        return
    typer.echo(f"{'failed at':<25} {'key':<32} {'attempts':>8}  error")
    for r in rows:
        error = " ".join(r.error.split())
        typer.echo(f"{r.failed_at or '?':<25} {_clip(r.key or '-', 32):<32} {r.attempts or 0:>8}  {_clip(error, 100)}")
    typer.echo(f"{len(rows)} of {total} dead letter(s); `vitrine catalog replay` re-sends them")


@catalog_app.command("replay")
def replay(
    tenant: str = typer.Option(None, "--tenant", "-t", help="Only this tenant's dead letters"),
    event_ids: list[str] = typer.Option(None, "--event-id", "-e", help="Only these event ids (repeatable)"),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Re-send dead-lettered events, with their original keys, to the product-events topic.

    Replaying twice is harmless: the worker ignores event versions it has already indexed.
    Fix the cause first (an image host, the embedder), or the events come back here.
    """
    from streams.sync_producer import BrokerUnreachable, SyncProducer
    from streams.topics import PRODUCT_EVENTS

    _setup_logging(verbose)
    settings = resolved_settings()
    wanted = set(event_ids or ())
    # Deduplicated: an event dead-lettered twice (e.g. after an earlier replay) is re-sent once.
    selected: dict[tuple[str | None, str], DeadLetterRecord] = {}
    try:
        for record in iter_dead_letters(settings):
            if (tenant is None or record.tenant_id == tenant) and (not wanted or record.event_id in wanted):
                selected.setdefault((record.key, record.payload), record)
    except BrokerUnreachable as exc:
        fail(str(exc), UNREACHABLE)
    missing = wanted - {r.event_id for r in selected.values()}
    if missing:
        typer.secho(f"not in the dead letters: {', '.join(sorted(missing))}", err=True, fg=typer.colors.YELLOW)
    if not selected:
        typer.echo("nothing to replay")
        raise typer.Exit(1 if missing else 0)
    topic = settings.topic(PRODUCT_EVENTS.name)
    if not yes:
        typer.confirm(f"re-send {len(selected)} event(s) to {topic}?", abort=True, err=True)
    try:
        with SyncProducer(settings.kafka_bootstrap, client_id=f"{settings.app_id}-replay",
                          timeout_s=settings.kafka_ack_timeout_s) as producer:
            for record in selected.values():
                producer.send(topic, record.key, record.payload.encode())
            producer.flush()
    except BrokerUnreachable as exc:
        fail(str(exc), UNREACHABLE)
    typer.echo(f"replayed {len(selected)} event(s) to {topic}")
    raise typer.Exit(1 if missing else 0)


@app.command()
def status(
    tenant: str = typer.Option(None, "--tenant", "-t", help="Only this tenant"),
    as_json: bool = typer.Option(False, "--json", help="One JSON object instead of the table"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Per tenant: products, deleted, images ok/pending/failed (top reasons), items; worker lag; dead letters.

    Exits 2 (after printing what it could) if Kafka is unreachable.
    """
    _setup_logging(verbose)
    settings = resolved_settings()
    tenants = _catalog_status(settings, tenant)
    kafka = _kafka_status(settings)
    for t in tenants:
        t["dead_letters"] = kafka["dead_letters_by_tenant"].get(t["tenant_id"], 0) if kafka["reachable"] else None
    if as_json:
        typer.echo(json.dumps({"tenants": tenants, "kafka": kafka}))
    else:
        _print_status(tenants, kafka)
    if not kafka["reachable"]:
        raise typer.Exit(UNREACHABLE)


def _catalog_status(settings: Settings, only: str | None) -> list[dict]:
    from sqlalchemy import select, text
    from sqlalchemy.exc import OperationalError

    from db.catalog import catalog_counts
    from db.models import Tenant
    from db.session import create_db_engine, session_factory

    engine = create_db_engine(settings.database_url)
    out = []
    try:
        with session_factory(engine)() as session:
            q = select(Tenant.id).order_by(Tenant.id)
            ids = session.scalars(q.where(Tenant.id == only) if only else q).all()
            if only and not ids:
                fail(f"unknown tenant {only!r}")
            for tid in ids:
                row = {"tenant_id": tid, **catalog_counts(session, tid)}
                row["images_pending"] = session.scalar(text(
                    "SELECT count(*) FROM product_images WHERE tenant_id = :t AND status = 'pending'"), {"t": tid})
                row["failure_reasons"] = [
                    {"reason": r.reason or "(none)", "count": r.n} for r in session.execute(text(
                        "SELECT failure_reason AS reason, count(*) AS n FROM product_images "
                        "WHERE tenant_id = :t AND status = 'failed' GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 3"),
                        {"t": tid})
                ]
                out.append(row)
    except OperationalError as exc:
        fail(f"Postgres is unreachable: {str(exc.orig).strip().splitlines()[0]}", UNREACHABLE)
    finally:
        engine.dispose()
    return out


def _kafka_status(settings: Settings) -> dict:
    """Worker lag and dead letters (total and per tenant); `reachable: false` with the reason instead of failing."""
    from kafka.errors import KafkaError

    from streams.lag import consumer_lag
    from streams.sync_producer import BrokerUnreachable
    from streams.topics import PRODUCT_EVENTS

    events = settings.topic(PRODUCT_EVENTS.name)
    out = {"reachable": False, "group": settings.app_id, "topic": events, "lag": None, "lag_error": None,
           "dead_letters": None, "dead_letters_by_tenant": {}, "error": None}
    try:
        # Counted by reading, not from offsets (Tansu's end offsets are not high watermarks). Reading
        # first also probes the broker with a short timeout: the lag helper's admin client waits 30 s.
        by_tenant: dict[str, int] = {}
        total = 0
        for record in iter_dead_letters(settings):
            total += 1
            by_tenant[record.tenant_id or "?"] = by_tenant.get(record.tenant_id or "?", 0) + 1
        out["dead_letters"], out["dead_letters_by_tenant"] = total, by_tenant
        out["reachable"] = True
        try:
            out["lag"] = consumer_lag(settings.kafka_bootstrap, settings.app_id, [events])[events]
        except Exception as exc:  # noqa: BLE001  the counts above are still worth printing
            out["lag_error"] = f"{type(exc).__name__}: {exc}"
    except BrokerUnreachable as exc:
        out["error"] = str(exc)
    except (KafkaError, OSError) as exc:
        out["error"] = f"Kafka at {settings.kafka_bootstrap} is unreachable: {exc}"
    return out


def _print_status(tenants: list[dict], kafka: dict) -> None:
    head = ("tenant", "products", "deleted", "images ok", "pending", "failed", "items", "dead")
    typer.echo(f"{head[0]:<24}" + "".join(f"{h:>10}" for h in head[1:]))
    for t in tenants:
        cells = (t["products"], t["deleted"], t["images_ok"], t["images_pending"], t["images_failed"], t["items"],
                 "?" if t["dead_letters"] is None else t["dead_letters"])
        typer.echo(f"{_clip(t['tenant_id'], 24):<24}" + "".join(f"{c:>10}" for c in cells))
        for r in t["failure_reasons"]:
            typer.echo(f"  failed: {r['count']} x {_clip(' '.join(r['reason'].split()), 90)}")
    if not tenants:
        typer.echo("(no tenants; create one with `vitrine tenant create`)")
    typer.echo("")
    if not kafka["reachable"]:
        typer.secho(f"kafka: {kafka['error']}", err=True, fg=typer.colors.RED)
        return
    lag = kafka["lag"] if kafka["lag_error"] is None else f"unavailable ({_clip(kafka['lag_error'], 80)})"
    typer.echo(f"worker lag     {lag}  (group {kafka['group']} on {kafka['topic']})")
    typer.echo(f"dead letters   {kafka['dead_letters']}" + ("  (`vitrine catalog dead-letters`)"
                                                             if kafka["dead_letters"] else ""))


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
