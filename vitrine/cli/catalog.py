"""Catalog commands: bulk import of feeds, dead letters and their replay (`streams.dead_letters`).

Exit codes (vitrine/cli/app.py, README "Exit codes"): 0 all good; 1 failed (bad feed lines, unknown
tenant, indexing stalled); 2 usage; 3 a service (Kafka, Postgres) is unreachable.
`vitrine status` is in `vitrine/cli/status.py`.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from core.settings import Settings
from vitrine.cli.app import UNREACHABLE, catalog_app, fail, setup_logging
from vitrine.cli.stack import resolved_settings

if TYPE_CHECKING:
    from sqlalchemy.exc import OperationalError

__all__ = ["UNREACHABLE", "clip", "postgres_unreachable", "setup_command_logging"]  # status.py imports these

PROGRESS_EVERY = 1000  # lines between progress-bar updates: per-line updates would cost more than parsing
RECEIPT_BATCH = 5000  # event ids per receipts statement
POLL_S = 1.0  # between two counts of indexed products while following the worker


@dataclass
class ImportSummary:
    """What `catalog import` did, as printed (or as one JSON object with --json)."""

    file: str
    tenant: str
    dry_run: bool
    lines_read: int = 0
    good: int = 0  # produced and acknowledged (valid, in a dry run)
    bad: int = 0
    elapsed_s: float = 0.0
    errors: list[str] = field(default_factory=list)
    indexed: int | None = None  # products the worker stored at the version sent (None: not followed)
    index_elapsed_s: float | None = None
    stalled: bool = False


@catalog_app.command("import")
def import_feed(
    path: Path = typer.Argument(..., help="A .jsonl or .csv feed (optionally .gz)"),
    tenant: str = typer.Option(..., "--tenant", "-t", help="Tenant id the products belong to"),
    fmt: str = typer.Option(None, "--format", "-f", help="jsonl | csv (default: from the file extension)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate the file only: no Kafka, no database"),
    wait: bool = typer.Option(
        True, "--wait/--no-wait", help="Follow the worker until every product sent is indexed (progress bar)"
    ),
    stall_s: float = typer.Option(
        120.0, "--stall-timeout", min=1, help="Give up following after this many seconds without progress"
    ),
    show_errors: int = typer.Option(20, "--show-errors", min=0, help="How many bad lines to list"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (the summary) instead of text"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Validate a feed line by line, produce its good lines to the product-events topic, follow the indexing.

    JSONL: one object per line, a whole catalog event or just a product {id, version, title, ...};
    products get the event id import:TENANT:ID:VERSION, so importing a file twice changes nothing.
    CSV: a header row with id, version, title, category, price, currency, in_stock, image_urls
    (separated by |); any other column becomes an attribute. Bad lines are reported with their
    numbers and the good ones still go. Then (unless --no-wait) a progress bar follows the worker
    until every product sent is indexed. Exit 0 if every line was produced (and indexed), 1 if any
    was bad or the indexing stalled, 2 on bad usage, 3 if Kafka or Postgres is unreachable.
    """
    from streams.feed import FeedFormatError, feed_format

    setup_command_logging(verbose)
    try:
        fmt = feed_format(path, fmt)
    except FeedFormatError as exc:
        fail(str(exc))
    if not path.is_file():
        fail(f"no such file: {path}")

    summary = ImportSummary(file=str(path), tenant=tenant, dry_run=dry_run)
    settings = None if dry_run else resolved_settings()
    if settings is not None:
        _require_tenant(settings, tenant)
    versions, event_ids = _produce(path, fmt, settings, summary, show_errors)
    if settings is not None and versions:
        _record_receipts(settings, tenant, event_ids)
        if wait:
            _follow_indexing(settings, tenant, versions, stall_s, summary)
    _print_summary(summary, as_json)
    raise typer.Exit(1 if summary.bad or summary.stalled else 0)


def _produce(
    path: Path, fmt: str, settings: Settings | None, summary: ImportSummary, show_errors: int
) -> tuple[dict[str, int], list[str]]:
    """Parse the feed and produce its good lines (not with settings None): product id -> version sent, event ids."""
    from streams.feed import FeedFormatError, parse_feed
    from streams.sync_producer import BrokerUnreachable, SyncProducer
    from streams.topics import PRODUCT_EVENTS

    producer = topic = None
    if settings is not None:
        try:
            producer = SyncProducer(
                settings.kafka_bootstrap, client_id=f"{settings.app_id}-import", timeout_s=settings.kafka_ack_timeout_s
            )
        except BrokerUnreachable as exc:
            fail(str(exc), UNREACHABLE)
        _ensure_topics(settings)
        topic = settings.topic(PRODUCT_EVENTS.name)

    versions: dict[str, int] = {}
    event_ids: list[str] = []
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if producer is not None:
            stack.enter_context(producer)
        raw = stack.enter_context(path.open("rb"))
        lines = stack.enter_context(gzip.open(raw)) if path.suffix.lower() == ".gz" else raw
        bar = stack.enter_context(
            typer.progressbar(
                length=path.stat().st_size, label=f"importing {path.name}", file=sys.stderr, show_pos=False
            )
        )
        try:
            for record in parse_feed(lines, summary.tenant, fmt):
                summary.lines_read += 1
                if record.ok:
                    summary.good += 1
                    product = record.event.product
                    versions[product.id] = max(product.version, versions.get(product.id, product.version))
                    event_ids.append(record.event.event_id)
                    if producer is not None:
                        producer.send(topic, record.event.key, record.event.model_dump_json().encode())
                else:
                    summary.bad += 1
                    if len(summary.errors) < show_errors:
                        summary.errors.append(f"line {record.line}: {record.error}")
                if summary.lines_read % PROGRESS_EVERY == 0:
                    bar.update(raw.tell() - bar.pos)
            if producer is not None:
                producer.flush()  # the summary must only count what the broker acknowledged
        except FeedFormatError as exc:
            fail(f"{path.name}: {exc}")
        except (OSError, EOFError) as exc:  # a truncated .gz, an unreadable disk
            fail(f"cannot read {path}: {exc}")
        except BrokerUnreachable as exc:
            fail(f"{exc} ({producer.acked} of {summary.good} events acknowledged before the failure)", UNREACHABLE)
        bar.update(bar.length - bar.pos)
    summary.elapsed_s = time.perf_counter() - started
    return versions, event_ids


def _record_receipts(settings: Settings, tenant: str, event_ids: list[str]) -> None:
    """Record the acknowledged events as received, as the webhook does: they count as "events in"."""
    from sqlalchemy.exc import OperationalError

    from db.receipts import claim, mark_acked
    from db.session import create_db_engine, session_factory

    engine = create_db_engine(settings.database_url)
    try:
        with session_factory(engine).begin() as session:
            for i in range(0, len(event_ids), RECEIPT_BATCH):
                batch = event_ids[i : i + RECEIPT_BATCH]
                mark_acked(session, tenant, claim(session, tenant, batch, settings.receipt_lease_s).new)
    except OperationalError as exc:
        fail(postgres_unreachable(exc), UNREACHABLE)
    finally:
        engine.dispose()


def _follow_indexing(
    settings: Settings, tenant: str, versions: dict[str, int], stall_s: float, summary: ImportSummary
) -> None:
    """A progress bar of products indexed, until all are or nothing moved for `stall_s` seconds."""
    from sqlalchemy.exc import OperationalError

    from db.import_progress import count_done
    from db.session import create_db_engine, session_factory

    engine = create_db_engine(settings.database_url)
    started = last_progress = time.perf_counter()
    done = 0
    try:
        with typer.progressbar(length=len(versions), label="indexing", file=sys.stderr) as bar:
            while True:
                with session_factory(engine)() as session:
                    now_done = count_done(session, tenant, versions)
                bar.update(now_done - done)
                now = time.perf_counter()
                if now_done > done:
                    done, last_progress = now_done, now
                if done >= len(versions) or now - last_progress >= stall_s:
                    break
                time.sleep(POLL_S)
    except OperationalError as exc:
        fail(postgres_unreachable(exc), UNREACHABLE)
    finally:
        engine.dispose()
    summary.indexed, summary.index_elapsed_s = done, time.perf_counter() - started
    summary.stalled = done < len(versions)


def _print_summary(summary: ImportSummary, as_json: bool) -> None:
    """The summary as aligned lines, or one JSON object."""
    s = summary
    rate, unit = (s.lines_read, "lines/s (validated)") if s.dry_run else (s.good, "events/s (acknowledged)")
    rate = rate / s.elapsed_s if s.elapsed_s > 0 else 0.0
    if s.stalled:  # on stderr, so --json output stays one object
        typer.secho(
            f"indexing stalled: {s.indexed} product(s) indexed, then no progress for the stall timeout "
            "(is `vitrine worker` running? see `vitrine status` and `vitrine catalog dead-letters`)",
            err=True,
            fg=typer.colors.YELLOW,
        )
    if as_json:
        typer.echo(json.dumps(asdict(s) | {"rate_per_s": round(rate, 1)}))
        return
    typer.echo(f"lines read  {s.lines_read}")
    typer.echo(f"{'valid' if s.dry_run else 'produced':<11} {s.good}{'  (dry run: nothing sent)' if s.dry_run else ''}")
    typer.echo(f"bad         {s.bad}")
    typer.echo(f"elapsed     {s.elapsed_s:.2f} s")
    typer.echo(f"rate        {rate:.0f} {unit}")
    if s.indexed is not None:
        typer.echo(f"indexed     {s.indexed} product(s) in {s.index_elapsed_s:.1f} s")
    if s.errors:
        typer.echo(f"first {len(s.errors)} bad line(s):" if s.bad > len(s.errors) else "bad lines:")
        for line in s.errors:
            typer.echo(f"  {line}")


def setup_command_logging(verbose: bool) -> None:
    """`setup_logging`, with kafka-python's connection noise silenced unless verbose."""
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
        fail(postgres_unreachable(exc), UNREACHABLE)
    finally:
        engine.dispose()
    if not exists:
        fail(f"unknown tenant {tenant!r} (create it with `vitrine tenant create`)")


def postgres_unreachable(exc: OperationalError) -> str:
    """One line for a sqlalchemy OperationalError: the first line of the driver's message."""
    return f"Postgres is unreachable: {str(exc.orig).strip().splitlines()[0]}"


def _ensure_topics(settings: Settings) -> None:
    """Create missing topics first: Tansu would auto-create them with its own partition count."""
    from kafka.errors import KafkaError

    from streams.topics import ensure_topics

    try:
        ensure_topics(settings)
    except (KafkaError, OSError) as exc:
        fail(f"Kafka at {settings.kafka_bootstrap} is unreachable: {exc}", UNREACHABLE)


@catalog_app.command("dead-letters")
def dead_letters(
    tenant: str = typer.Option(None, "--tenant", "-t", help="Only this tenant's dead letters"),
    limit: int = typer.Option(50, "--limit", "-n", min=1, help="Show at most the N newest"),
    as_json: bool = typer.Option(False, "--json", help='One JSON object {"dead_letters": [...], "count": n}'),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """List the events the worker gave up on: when, which key, how many attempts, and why."""
    from streams.dead_letters import iter_dead_letters, newest_dead_letters
    from streams.sync_producer import BrokerUnreachable

    setup_command_logging(verbose)
    settings = resolved_settings()
    try:
        rows, total = newest_dead_letters(iter_dead_letters(settings), limit, tenant)
    except BrokerUnreachable as exc:
        fail(str(exc), UNREACHABLE)
    if as_json:
        typer.echo(json.dumps({"dead_letters": [asdict(r) for r in rows], "count": len(rows), "total": total}))
        return
    if not rows:
        typer.echo("no dead letters" + (f" for tenant {tenant}" if tenant else ""))
        return
    typer.echo(f"{'failed at':<25} {'key':<32} {'attempts':>8}  error")
    for r in rows:
        error = " ".join(r.error.split())
        typer.echo(f"{r.failed_at or '?':<25} {clip(r.key or '-', 32):<32} {r.attempts or 0:>8}  {clip(error, 100)}")
    typer.echo(f"{len(rows)} of {total} dead letter(s); `vitrine catalog replay` re-sends them")


@catalog_app.command("replay")
def replay(
    tenant: str = typer.Option(None, "--tenant", "-t", help="Only this tenant's dead letters"),
    event_ids: list[str] = typer.Option(None, "--event-id", "-e", help="Only these event ids (repeatable)"),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation"),
    as_json: bool = typer.Option(False, "--json", help='One JSON object {"replayed": {topic: n}, ...} (implies --yes)'),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Re-send dead-lettered events, with their original keys, each to the topic it came from.

    Catalog events go back to the product-events topic, interactions to the interactions topic; a
    record from any other topic is listed and left alone (exit 1). Replaying twice is harmless: the
    worker ignores catalog versions it has indexed and interaction event ids it has stored.
    Fix the cause first (an image host, the embedder), or the events come back here.
    """
    from streams.dead_letters import iter_dead_letters, replay_plan, resend, select_replay
    from streams.sync_producer import BrokerUnreachable

    setup_command_logging(verbose)
    settings = resolved_settings()
    try:
        selection = select_replay(iter_dead_letters(settings), tenant, event_ids or ())
    except BrokerUnreachable as exc:
        fail(str(exc), UNREACHABLE)
    missing = selection.missing
    if missing:
        typer.secho(f"not in the dead letters: {', '.join(sorted(missing))}", err=True, fg=typer.colors.YELLOW)
    plan, unroutable = replay_plan(settings, selection.records)
    for source in sorted({r.topic or "?" for r in unroutable}):
        n = sum(1 for r in unroutable if (r.topic or "?") == source)
        typer.secho(
            f"not replayed: {n} event(s) from {source}, a topic vitrine does not consume",
            err=True,
            fg=typer.colors.YELLOW,
        )
    failed = bool(missing or unroutable)
    if not plan:
        if as_json:
            typer.echo(json.dumps(_replay_json({}, missing, unroutable)))
        else:
            typer.echo("nothing to replay")
        raise typer.Exit(1 if failed else 0)
    if not yes and not as_json:
        where = ", ".join(f"{len(records)} to {topic}" for topic, records in plan.items())
        typer.confirm(f"re-send {sum(len(r) for r in plan.values())} event(s): {where}?", abort=True, err=True)
    try:
        sent = resend(settings, plan)
    except BrokerUnreachable as exc:
        fail(str(exc), UNREACHABLE)
    if as_json:
        typer.echo(json.dumps(_replay_json(sent, missing, unroutable)))
    else:
        for topic, n in sent.items():
            typer.echo(f"replayed {n} event(s) to {topic}")
    raise typer.Exit(1 if failed else 0)


def _replay_json(sent: dict, missing, unroutable) -> dict:
    """What a replay did, for scripts: events re-sent per topic, ids not found, events left alone per topic."""
    left: dict[str, int] = {}
    for r in unroutable:
        left[r.topic or "?"] = left.get(r.topic or "?", 0) + 1
    return {"replayed": dict(sent), "not_found": sorted(missing), "not_replayed": left}


def clip(text: str, width: int) -> str:
    """`text` cut to `width` characters, an ellipsis marking the cut."""
    return text if len(text) <= width else text[: width - 1] + "…"
