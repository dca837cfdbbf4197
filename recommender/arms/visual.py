"""visual: pgvector kNN over item vectors, aggregated to products by their best item match."""

from __future__ import annotations

from sqlalchemy.orm import Session

from db.product_queries import product_category
from db.vector_queries import similar_products
from recommender.arms.base import ArmRequest, ArmResult
from recommender.arms.baseline import BaselineArm


class VisualArm:
    name = "visual"

    def __init__(self, *, model_key: str, dim: int, fallback: BaselineArm, ef_search: int = 64):
        self.model_key, self.dim, self.fallback, self.ef_search = model_key, dim, fallback, ef_search

    def recommend(self, session: Session, request: ArmRequest) -> ArmResult | None:
        exists, category = product_category(session, request.tenant_id, request.product_id)
        if not exists:
            return None
        found = similar_products(session, tenant_id=request.tenant_id, external_id=request.product_id,
                                 model_key=self.model_key, dim=self.dim, limit=request.limit,
                                 category=category if request.same_category else None, ef_search=self.ef_search)
        if found.neighbours is None:  # not indexed yet: the shopper still gets recommendations
            base = self.fallback.recommend(session, request)
            return ArmResult(base.arm, base.items, fallback="no_vectors_yet", strategy=base.strategy)
        return ArmResult(self.name, found.neighbours, strategy=found.strategy)
