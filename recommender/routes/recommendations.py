"""Storefront recommendations: sticky experiment assignment, the arm's items, one exposure event."""

from __future__ import annotations

from functools import partial
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, HTTPException, Query, Request

from core.contracts import PRINTABLE, InteractionEvent
from recommender.deps import StorefrontTenant
from recommender.errors import JSONRoute
from recommender.schemas import Problem, Recommendations, RecommendedItem
from recommender.serving import serve

router = APIRouter(prefix="/v1", tags=["storefront"], route_class=JSONRoute)


def _serve(request: Request, tenant, **kwargs):
    with request.app.state.sessions() as session:
        state = request.app.state
        return serve(
            session, state.arms, tenant, experiments=state.experiment_cache, models=state.model_cache, **kwargs
        )


@router.get(
    "/recommendations", response_model=Recommendations, responses={401: {"model": Problem}, 404: {"model": Problem}}
)
async def recommendations(
    request: Request,
    tenant: StorefrontTenant,
    product_id: Annotated[
        str, Query(min_length=1, max_length=255, pattern=PRINTABLE, description="The product being viewed")
    ],
    user_id: Annotated[
        str, Query(min_length=1, max_length=255, pattern=PRINTABLE, description="Stable shopper id (assignment unit)")
    ],
    placement: Annotated[str, Query(min_length=1, max_length=64, pattern=PRINTABLE)] = "similar",
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
    same_category: Annotated[bool, Query(description="Visual arm: only the product's category")] = False,
) -> Recommendations:
    """Products to show next to `product_id` for `user_id`, from the tenant's catalog only."""
    served = await anyio.to_thread.run_sync(
        partial(
            _serve,
            request,
            tenant,
            user_id=user_id,
            product_id=product_id,
            placement=placement,
            limit=limit,
            same_category=same_category,
        ),
        limiter=request.app.state.serve_limiter,
    )
    if served is None:
        raise HTTPException(404, f"unknown product {product_id!r}")
    items = [
        RecommendedItem(
            product_id=n.product_id, title=n.title, image_url=n.image_url, price=n.price, score=round(n.score, 6)
        )
        for n in served.result.items
    ]
    # One exposure per response, off the request path (buffered; lost ones are counted).
    request.app.state.exposures.submit(
        f"{tenant.id}:{user_id}",
        InteractionEvent(
            event_id=f"exposure:{served.request_id}",
            tenant_id=tenant.id,
            type="exposure",
            user_id=user_id,
            request_id=served.request_id,
            product_id=product_id,
            experiment=served.experiment,
            arm=served.arm,
            payload={
                "placement": placement,
                "shown": [i.product_id for i in items],
                "positions": list(range(1, len(items) + 1)),
                "served_by": served.result.arm,
                "model": served.result.model,
                "fallback": served.result.fallback,
            },
        ),
    )
    return Recommendations(
        request_id=served.request_id,
        experiment=served.experiment,
        arm=served.arm,
        fallback=served.result.fallback,
        model=served.result.model,
        items=items,
    )
