"""baseline: same-category products ranked by time-decayed popularity, then newest."""

from __future__ import annotations

from sqlalchemy.orm import Session

from db.product_queries import popular_in_category, product_category
from recommender.arms.base import ArmRequest, ArmResult
from recommender.ttl_cache import TTLCache

CACHED_LIST = 101  # the API's largest `limit` (100), plus the viewed product itself


class BaselineArm:
    name = "baseline"

    def __init__(self, *, half_life_s: float = 3 * 86400, lists: TTLCache | None = None):
        """`lists`: keeps each (tenant, category) ranking for its TTL instead of ranking per request."""
        self.half_life_s, self.lists = half_life_s, lists

    def recommend(self, session: Session, request: ArmRequest) -> ArmResult | None:
        exists, category = product_category(session, request.tenant_id, request.product_id)
        if not exists:
            return None
        ranked = self._ranked(session, request.tenant_id, category, request.limit + 1)
        items = [n for n in ranked if n.product_id != request.product_id][: request.limit]
        return ArmResult(self.name, items, strategy="popularity")

    def _ranked(self, session: Session, tenant_id: str, category: str | None, need: int):
        def load(limit: int):
            return popular_in_category(
                session, tenant_id=tenant_id, category=category, limit=limit, half_life_s=self.half_life_s
            )

        if self.lists is None or not self.lists.enabled or need > CACHED_LIST:
            return load(need)
        # The tenant is part of the key: a category name shared by two shops never mixes their lists.
        return self.lists.get_or_load((tenant_id, category), lambda: load(CACHED_LIST))
