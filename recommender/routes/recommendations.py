"""Storefront recommendations (walking skeleton: the visual arm for every shopper)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request

from db.vector_queries import similar_products
from recommender.deps import SessionDep, StorefrontTenant
from recommender.schemas import Problem, RecommendedItem, Recommendations

router = APIRouter(prefix="/v1", tags=["storefront"])


@router.get("/recommendations", response_model=Recommendations,
            responses={401: {"model": Problem}, 404: {"model": Problem}})
def recommendations(
    request: Request, tenant: StorefrontTenant, session: SessionDep,
    product_id: Annotated[str, Query(min_length=1, max_length=255, description="The tenant's product id")],
    user_id: Annotated[str | None, Query(max_length=255)] = None,
    placement: Annotated[str, Query(max_length=64)] = "similar",
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> Recommendations:
    """Products that look like `product_id`, from the same tenant only."""
    embedder = request.app.state.embedder
    found = similar_products(session, tenant_id=tenant.id, external_id=product_id,
                             model_key=embedder.model_key, dim=embedder.dim, limit=limit)
    request_id = uuid.uuid4().hex
    if found is None:
        if not _product_exists(session, tenant.id, product_id):
            raise HTTPException(404, f"unknown product {product_id!r}")
        return Recommendations(request_id=request_id, experiment=None, arm="visual",
                               fallback="no_vectors_yet", items=[])
    items = [RecommendedItem(product_id=n.product_id, title=n.title, image_url=n.image_url, price=n.price,
                             score=round(n.score, 6)) for n in found]
    return Recommendations(request_id=request_id, experiment=None, arm="visual", items=items)


def _product_exists(session, tenant_id: str, external_id: str) -> bool:
    from sqlalchemy import select

    from db.models import Product
    return session.scalar(select(Product.id).where(
        Product.tenant_id == tenant_id, Product.external_id == external_id, Product.deleted.is_(False))) is not None
