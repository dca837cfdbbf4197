"""The interface every recommender arm implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol

from sqlalchemy.orm import Session

from db.vector_queries import Neighbour


@dataclass(frozen=True)
class ArmRequest:
    tenant_id: str
    product_id: str  # the tenant's external id of the product being viewed
    limit: int = 10
    same_category: bool = False


@dataclass(frozen=True)
class ArmResult:
    arm: str  # the arm that produced the items (differs from the assigned one after a fallback)
    items: list[Neighbour]
    fallback: str | None = None  # why another arm answered
    strategy: str | None = None  # how (e.g. "hnsw", "exact"), for logs and benchmarks
    model: str | None = None  # the model key whose vectors ranked the items (visual arms), recorded on the exposure


class Arm(Protocol):
    name: ClassVar[str]

    def recommend(self, session: Session, request: ArmRequest) -> ArmResult | None:
        """Items for the request, or None if the product does not exist for this tenant."""
