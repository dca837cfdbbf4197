"""API request/response schemas (distinct from the db/ table models)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from core.contracts import CatalogEvent


class CatalogBatch(BaseModel):
    events: list[CatalogEvent] = Field(min_length=1)


class Accepted(BaseModel):
    accepted: list[str] = Field(description="Event ids acknowledged by Kafka")
    duplicates: list[str] = Field(default_factory=list, description="Event ids accepted before; not sent again")


class RecommendedItem(BaseModel):
    product_id: str
    title: str
    image_url: str | None
    price: float | None
    score: float = Field(description="Cosine similarity of the best-matching items (visual arm)")


class Recommendations(BaseModel):
    request_id: str
    experiment: str | None
    arm: str
    fallback: str | None = Field(None, description="Why another arm answered, e.g. 'no_vectors_yet'")
    items: list[RecommendedItem]


class Problem(BaseModel):
    detail: str | list[dict]
