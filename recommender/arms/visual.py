"""visual: pgvector kNN over item vectors, aggregated to products by their best item match.

One instance serves one model (key, dimension, index kind). The API builds one for the deployed
embedder; `for_model` gives the sibling for a tenant's deployed trained model (`visual@<key>` arms and
a tenant's active model), sharing the fallback and the caches.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from db.product_queries import product_category
from db.vector_queries import choose_strategy, similar_products
from recommender.arms.base import ArmRequest, ArmResult
from recommender.arms.baseline import BaselineArm
from recommender.ttl_cache import TTLCache


class VisualArm:
    name = "visual"

    def __init__(
        self,
        *,
        model_key: str,
        dim: int,
        fallback: BaselineArm,
        ef_search: int = 64,
        strategies: TTLCache | None = None,
        index_kind: str = "halfvec",
    ):
        """`strategies`: keeps the exact-or-HNSW choice per (tenant, model, category) for its TTL."""
        self.model_key, self.dim, self.fallback, self.ef_search = model_key, dim, fallback, ef_search
        self.strategies, self.index_kind = strategies, index_kind
        self._siblings: dict[tuple[str, int, str], VisualArm] = {}

    def for_model(self, model_key: str, dim: int, index_kind: str = "halfvec") -> VisualArm:
        """The arm of another model, with this one's fallback, candidate list and caches (one per model)."""
        if (model_key, dim, index_kind) == (self.model_key, self.dim, self.index_kind):
            return self
        key = (model_key, dim, index_kind)
        arm = self._siblings.get(key)
        if arm is None:
            arm = VisualArm(
                model_key=model_key,
                dim=dim,
                fallback=self.fallback,
                ef_search=self.ef_search,
                strategies=self.strategies,
                index_kind=index_kind,
            )
            self._siblings[key] = arm  # a plain dict: a racing duplicate is harmless
        return arm

    def recommend(self, session: Session, request: ArmRequest) -> ArmResult | None:
        category = None
        if request.same_category:
            exists, category = product_category(session, request.tenant_id, request.product_id)
            if not exists:
                return None
        found = similar_products(
            session,
            tenant_id=request.tenant_id,
            external_id=request.product_id,
            model_key=self.model_key,
            dim=self.dim,
            limit=request.limit,
            category=category,
            ef_search=self.ef_search,
            strategy=self._strategy(session, request.tenant_id, category),
            index_kind=self.index_kind,
        )
        if found.neighbours is None:  # no vectors yet, or (not checked above) no such product
            if not request.same_category and not product_category(session, request.tenant_id, request.product_id)[0]:
                return None
            base = self.fallback.recommend(session, request)  # the shopper still gets recommendations
            return ArmResult(base.arm, base.items, fallback="no_vectors_yet", strategy=base.strategy)
        return ArmResult(self.name, found.neighbours, strategy=found.strategy, model=self.model_key)

    def _strategy(self, session: Session, tenant_id: str, category: str | None) -> str:
        def choose() -> str:
            return choose_strategy(
                session, model_key=self.model_key, tenant_id=tenant_id, category=category, index_kind=self.index_kind
            )

        if self.strategies is None:
            return choose()
        return self.strategies.get_or_load((tenant_id, self.model_key, self.index_kind, category), choose)
