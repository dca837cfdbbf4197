"""baseline: same-category products ranked by time-decayed popularity, then newest."""

from __future__ import annotations

from sqlalchemy.orm import Session

from db.product_queries import popular_in_category, product_category
from recommender.arms.base import ArmRequest, ArmResult


class BaselineArm:
    name = "baseline"

    def __init__(self, *, half_life_s: float = 3 * 86400):
        self.half_life_s = half_life_s

    def recommend(self, session: Session, request: ArmRequest) -> ArmResult | None:
        exists, _ = product_category(session, request.tenant_id, request.product_id)
        if not exists:
            return None
        items = popular_in_category(session, tenant_id=request.tenant_id, external_id=request.product_id,
                                    limit=request.limit, half_life_s=self.half_life_s)
        return ArmResult(self.name, items, strategy="popularity")
