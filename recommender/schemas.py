"""API request/response schemas (distinct from the db/ table models)."""

from __future__ import annotations

import re

from pydantic import BaseModel, Field, field_validator

from core.contracts import NO_USERINFO, CatalogEvent


class CatalogBatch(BaseModel):
    events: list[CatalogEvent] = Field(min_length=1)


class Accepted(BaseModel):
    accepted: list[str] = Field(description="Event ids acknowledged by Kafka")
    duplicates: list[str] = Field(default_factory=list, description="Event ids accepted before; not sent again")


class RecommendedItem(BaseModel):
    product_id: str
    title: str
    image_url: str | None = Field(description="The product's first indexed image (never one with credentials in it)")
    price: float | None
    score: float = Field(description="Cosine similarity of the best-matching items (visual arm)")

    @field_validator("image_url")
    @classmethod
    def _without_credentials(cls, url: str | None) -> str | None:
        # URLs with user:password@ are refused at the edge now; one stored before is not published.
        return url if url is None or re.match(NO_USERINFO, url) else None


class Recommendations(BaseModel):
    request_id: str
    experiment: str | None
    arm: str
    fallback: str | None = Field(None, description="Why another arm answered, e.g. 'no_vectors_yet', 'model_not_ready'")
    model: str | None = Field(None, description="The model whose vectors ranked the items (visual arms only)")
    items: list[RecommendedItem]


class Problem(BaseModel):
    detail: str | list[dict] = Field(description="What is wrong; for invalid input a list of {loc, msg, type}")
    errors: int | None = Field(None, description="How many errors the input had (detail lists the first 20)")
