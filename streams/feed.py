"""Catalog feeds (JSONL, CSV) parsed line by line into `CatalogEvent`s; pure, no Kafka, no files opened.

A feed can be larger than memory, so every parser is a generator over the feed's lines and keeps
nothing but the current record. Bad lines are data, not exceptions: each yields a `FeedRecord`
with the line number and a one-line reason, and parsing goes on.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from core.contracts import CatalogEvent, Product

FORMATS = ("jsonl", "csv")
_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv"}
CSV_COLUMNS = ("id", "version", "title", "category", "price", "currency", "in_stock", "image_urls")
CSV_REQUIRED = ("id", "version")
IMAGE_SEPARATOR = "|"
_MAX_ID = 255  # CatalogEvent.event_id max length


class FeedFormatError(ValueError):
    """The feed as a whole cannot be read (unknown format, CSV header without the required columns)."""


@dataclass(frozen=True)
class FeedRecord:
    """One record of a feed: an event, or the reason its line was rejected."""

    line: int
    event: CatalogEvent | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.event is not None


def feed_format(path: Path | str, explicit: str | None = None) -> str:
    """The feed format: the explicit choice, else guessed from the file extension."""
    if explicit:
        if explicit not in FORMATS:
            raise FeedFormatError(f"unknown format {explicit!r}: use one of {', '.join(FORMATS)}")
        return explicit
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] == ".gz":  # feed.jsonl.gz -> jsonl; the reader decompresses
        suffixes = suffixes[:-1]
    fmt = _EXTENSIONS.get(suffixes[-1] if suffixes else "")
    if fmt is None:
        raise FeedFormatError(f"cannot tell the format of {Path(path).name}: pass --format jsonl|csv")
    return fmt


def parse_feed(lines: Iterable[bytes | str], tenant_id: str, fmt: str) -> Iterator[FeedRecord]:
    """Parse a feed of format `fmt` for `tenant_id`, one record per non-blank line (or CSV row)."""
    if fmt == "jsonl":
        return parse_jsonl(lines, tenant_id)
    if fmt == "csv":
        return parse_csv(lines, tenant_id)
    raise FeedFormatError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")


def import_event_id(tenant_id: str, product_id: str, version: int) -> str:
    """Deterministic event id of an imported product, so importing the same feed twice is harmless."""
    event_id = f"import:{tenant_id}:{product_id}:{version}"
    if len(event_id) > _MAX_ID:  # product ids may use the whole 255 characters
        event_id = "import:" + hashlib.sha256(event_id.encode()).hexdigest()
    return event_id


def parse_jsonl(lines: Iterable[bytes | str], tenant_id: str) -> Iterator[FeedRecord]:
    """One JSON object per line: a whole catalog event, or just a product (wrapped as an upsert)."""
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            doc = json.loads(raw)  # bytes in: json detects UTF-8 and rejects invalid bytes
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            yield FeedRecord(number, error=f"invalid JSON: {exc}")
            continue
        if not isinstance(doc, dict):
            yield FeedRecord(number, error=f"expected a JSON object, got {type(doc).__name__}")
            continue
        yield _to_record(number, doc, tenant_id)


def parse_csv(lines: Iterable[bytes | str], tenant_id: str) -> Iterator[FeedRecord]:
    """A header row, then one product per row; image URLs joined by `|`, unknown columns become attributes."""
    undecodable: set[int] = set()
    reader = csv.reader(_text_lines(lines, undecodable))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        return
    missing = [c for c in CSV_REQUIRED if c not in header]
    if missing:
        raise FeedFormatError(f"CSV header lacks column(s) {', '.join(missing)} (has: {', '.join(header)})")
    duplicates = sorted({h for h in header if header.count(h) > 1})
    if duplicates:
        raise FeedFormatError(f"CSV header repeats column(s) {', '.join(duplicates)}")
    last_line = reader.line_num
    for row in reader:
        # A quoted field may span lines: report the line the record starts on.
        number, last_line = last_line + 1, reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if undecodable.intersection(range(number, last_line + 1)):
            yield FeedRecord(number, error="line is not valid UTF-8")
            continue
        if len(row) > len(header):
            yield FeedRecord(number, error=f"{len(row)} fields but the header has {len(header)}")
            continue
        yield _to_record(number, _csv_product(dict(zip(header, row))), tenant_id)


def _text_lines(lines: Iterable[bytes | str], undecodable: set[int]) -> Iterator[str]:
    """Decode byte lines as UTF-8 (a BOM on the first is dropped), noting which lines were invalid."""
    for number, raw in enumerate(lines, start=1):
        if isinstance(raw, str):
            yield raw
            continue
        try:
            yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError:
            undecodable.add(number)
            yield raw.decode("utf-8", errors="replace")


def _csv_product(cells: dict[str, str]) -> dict:
    """A product object from one CSV row; empty cells mean "not given" (pydantic defaults apply)."""
    product: dict = {}
    attributes: dict[str, str] = {}
    for column, value in cells.items():
        value = value.strip()
        if not value:
            continue
        if column == "image_urls":
            product[column] = [u.strip() for u in value.split(IMAGE_SEPARATOR) if u.strip()]
        elif column in CSV_COLUMNS:
            product[column] = value  # pydantic's lax mode parses "3", "19.90", "yes"/"false"
        else:
            attributes[column] = value
    if attributes:
        product["attributes"] = attributes
    return product


def _to_record(number: int, doc: dict, tenant_id: str) -> FeedRecord:
    """Validate one parsed object (a whole event, or a bare product) as an event for `tenant_id`."""
    try:
        if "product" in doc:  # a whole event; its tenant defaults to the import's
            event = CatalogEvent.model_validate({"tenant_id": tenant_id, **doc})
        else:
            product = Product.model_validate(doc)
            event = CatalogEvent(
                event_id=import_event_id(tenant_id, product.id, product.version),
                tenant_id=tenant_id,
                type="product.upserted",
                product=product,
            )
    except ValidationError as exc:
        return FeedRecord(number, error=describe_errors(exc))
    if event.tenant_id != tenant_id:
        return FeedRecord(number, error=f"tenant_id: {event.tenant_id!r} is not the imported tenant {tenant_id!r}")
    return FeedRecord(number, event=event)


def describe_errors(exc: ValidationError, limit: int = 3) -> str:
    """pydantic errors as one line: `field.path: message; ...`."""
    parts = []
    for err in exc.errors(include_url=False)[:limit]:
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{where}: {err['msg']}")
    more = exc.error_count() - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")
