"""The event contracts that travel through Kafka (pydantic models, JSON on the wire)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, HttpUrl, StringConstraints, field_validator
from pydantic_core import PydanticCustomError

# What no id may hold: C0/C1 controls (Postgres cannot store a NUL; a newline forges log lines), and the
# zero-width, bidirectional and line-separator formatting characters (an id must read as what it is).
_HIDDEN = r"\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff"
# Spaces: fine inside an id, but an id of nothing else is blank.
_BLANK = r"\x20\xa0\u1680\u2000-\u200a\u202f\u205f\u3000"
PRINTABLE = rf"^[^{_HIDDEN}]*[^{_HIDDEN}{_BLANK}][^{_HIDDEN}]*$"
"""Printable text with at least one visible character; written so that ECMA (OpenAPI clients), Rust
(pydantic) and Python regex engines read it alike, so the published schema is the rule applied."""
NO_NUL = r"^[^\x00]*$"
"""Free text Postgres can store (text and jsonb hold no NUL)."""

# Interaction times outside these cannot be real (negative Unix time on the wire) and leave datetime
# arithmetic no room; the API's much narrower window (settings.event_max_age_s) is applied at the edge.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)


def printable(max_length: int) -> Any:
    """A string type of 1 to `max_length` printable characters, not blank (see PRINTABLE)."""
    return Annotated[str, StringConstraints(min_length=1, max_length=max_length, pattern=PRINTABLE)]


Id = Annotated[str, StringConstraints(min_length=1, max_length=255, strip_whitespace=True, pattern=PRINTABLE)]
Text = Annotated[str, StringConstraints(pattern=NO_NUL)]


def utcnow() -> datetime:
    return datetime.now(UTC)


NO_USERINFO = r"^[^:/?#]*:[/\\]*(?![/\\])[^/?#\\@]*(?:[/?#\\][\s\S]*)?$"
"""A URL without `user:password@` before its host: no '@' between the scheme and the path (a browser
reads a backslash there as a slash). The same regex is the published schema's pattern and the check."""


# Where NO_USERINFO fails on a string with a scheme: an '@' between the scheme and the path. (Without a
# scheme it fails too, and so does the URL type itself, with its own message.)
_USERINFO = r"^[^:/?#]*:[/\\]*[^/?#\\]*@"


def _no_userinfo(url: Any) -> Any:
    if re.match(_USERINFO, url if isinstance(url, str) else str(url)):
        # The message names no part of the URL: its input is the secret.
        raise PydanticCustomError(
            "url_userinfo",
            "credentials (user:password@) are not allowed in an image URL: "
            "they would be sent to the image host and published with the image",
        )
    return url


ImageUrl = Annotated[HttpUrl, BeforeValidator(_no_userinfo), Field(json_schema_extra={"pattern": NO_USERINFO})]
"""An http(s) image URL without credentials."""


class Product(BaseModel):
    """A product as a retailer describes it; `version` orders updates of the same product."""

    model_config = ConfigDict(extra="forbid")

    id: Id
    version: int = Field(ge=0, description="Monotonic per product; older versions are ignored")
    title: str = Field("", max_length=1000, pattern=NO_NUL)
    category: str | None = Field(None, max_length=255, pattern=NO_NUL)
    price: Decimal | None = Field(None, ge=0, max_digits=12, decimal_places=2)
    currency: str | None = Field(None, min_length=3, max_length=3, pattern=NO_NUL)
    in_stock: bool = True
    image_urls: list[ImageUrl] = Field(default_factory=list, max_length=20)
    # Stored as jsonb: no NUL in keys or strings, no NaN or infinity.
    attributes: dict[Text, Text | int | Annotated[float, Field(allow_inf_nan=False)] | bool | None] = Field(
        default_factory=dict
    )


class CatalogEvent(BaseModel):
    """`product.upserted` carries the whole product; `product.deleted` needs only its id and version."""

    model_config = ConfigDict(extra="forbid")

    event_id: Id
    tenant_id: Id
    type: Literal["product.upserted", "product.deleted"]
    occurred_at: datetime = Field(default_factory=utcnow)
    product: Product

    @property
    def key(self) -> str:
        """Kafka key: all events of one product land on one partition, in order."""
        return f"{self.tenant_id}:{self.product.id}"


class InteractionEvent(BaseModel):
    """What a shopper saw or did; `event_id` de-duplicates redelivery."""

    model_config = ConfigDict(extra="forbid")

    event_id: Id
    tenant_id: Id
    type: Literal["exposure", "click", "add_to_cart", "purchase"]
    user_id: Id
    request_id: printable(64) | None = None
    product_id: printable(255) | None = None
    experiment: str | None = Field(None, max_length=128)
    arm: str | None = Field(None, max_length=64)
    value: float | None = Field(None, allow_inf_nan=False)
    occurred_at: datetime = Field(default_factory=utcnow)
    payload: dict = Field(default_factory=dict)

    @field_validator("occurred_at")
    @classmethod
    def _possible_time(cls, v: datetime) -> datetime:
        """A time in [1970, 9999), in UTC when it names no offset."""
        v = v if v.tzinfo is not None else v.replace(tzinfo=UTC)
        if not EARLIEST <= v < LATEST:
            raise ValueError(f"occurred_at must lie between {EARLIEST:%Y} and {LATEST:%Y}")
        return v

    @property
    def key(self) -> str:
        return f"{self.tenant_id}:{self.user_id}"


class ProductIndexed(BaseModel):
    """Notice emitted after a product's index state changed (upsert indexed, or deleted)."""

    tenant_id: str
    product_id: str
    version: int
    event_id: str
    status: Literal["indexed", "deleted", "skipped_stale"]
    items: int = 0
    indexed_at: datetime = Field(default_factory=utcnow)


class DeadLetter(BaseModel):
    """An event the worker could not process, kept whole so it can be replayed."""

    topic: str
    key: str | None
    payload: str  # the original message value, as received
    error: str
    attempts: int
    failed_at: datetime = Field(default_factory=utcnow)
