"""The event contracts that travel through Kafka (pydantic models, JSON on the wire)."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, StringConstraints

Id = Annotated[str, StringConstraints(min_length=1, max_length=255, strip_whitespace=True)]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Product(BaseModel):
    """A product as a retailer describes it; `version` orders updates of the same product."""

    model_config = ConfigDict(extra="forbid")

    id: Id
    version: int = Field(ge=0, description="Monotonic per product; older versions are ignored")
    title: str = Field("", max_length=1000)
    category: str | None = Field(None, max_length=255)
    price: Decimal | None = Field(None, ge=0, max_digits=12, decimal_places=2)
    currency: str | None = Field(None, min_length=3, max_length=3)
    in_stock: bool = True
    image_urls: list[HttpUrl] = Field(default_factory=list, max_length=20)
    attributes: dict[str, str | int | float | bool | None] = Field(default_factory=dict)


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
    request_id: str | None = Field(None, max_length=64)
    product_id: str | None = Field(None, max_length=255)
    experiment: str | None = Field(None, max_length=128)
    arm: str | None = Field(None, max_length=64)
    value: float | None = None
    occurred_at: datetime = Field(default_factory=utcnow)
    payload: dict = Field(default_factory=dict)

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
