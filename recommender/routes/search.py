"""Search the catalog by a shopper's photo ("shop the look") or, with a text-capable embedder, by text."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from db.vector_queries import similar_to_vector
from recommender.deps import StorefrontTenant
from recommender.errors import JSONRoute
from recommender.schemas import Problem, RecommendedItem
from streams.image_fetch import FetchError
from vision.image import ImageError, load_image
from vision.items import extract_items

# Its body cap (the largest image plus the form around it) is set where create_app includes it.
router = APIRouter(prefix="/v1/search", tags=["storefront"], route_class=JSONRoute)
# Text search only works with a text-capable embedder: create_app publishes it in the schema only then.
text_router = APIRouter(prefix="/v1/search", tags=["storefront"], route_class=JSONRoute)


class FoundItem(BaseModel):
    box: tuple[float, float, float, float]
    label: str
    score: float
    products: list[RecommendedItem]


class ImageSearch(BaseModel):
    width: int
    height: int
    items: list[FoundItem]


class TextSearch(BaseModel):
    query: str
    items: list[RecommendedItem]


def _items(found) -> list[RecommendedItem]:
    return [
        RecommendedItem(
            product_id=n.product_id, title=n.title, image_url=n.image_url, price=n.price, score=round(n.score, 6)
        )
        for n in found
    ]


@router.post(
    "/by-image",
    response_model=ImageSearch,
    responses={
        400: {"model": Problem, "description": "Malformed multipart body"},
        401: {"model": Problem},
        413: {"model": Problem},
        422: {"model": Problem},
    },
)
async def by_image(
    request: Request,
    tenant: StorefrontTenant,
    image: Annotated[UploadFile | None, File(description="The shopper's photo")] = None,
    url: Annotated[str | None, Form(description="Or an http(s) URL of it")] = None,
    limit: Annotated[int, Query(ge=1, le=50)] = 5,
) -> ImageSearch:
    """Detect the items in the photo; for each, its box and the most similar products of the tenant."""
    state, settings = request.app.state, request.app.state.settings
    if (image is None) == (url is None):
        raise HTTPException(422, "send exactly one of: an `image` file upload or a `url` form field")
    if image is not None:
        data = await image.read(settings.max_image_bytes + 1)
    else:
        try:
            data = (await state.fetcher.fetch(url)).content  # same SSRF rules as ingestion
        except FetchError as exc:
            raise HTTPException(422, f"cannot fetch the image: {exc.reason}") from None
    try:
        loaded = load_image(data, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)
    except ImageError as exc:
        raise HTTPException(413 if exc.reason == "too_large" else 422, str(exc)) from None

    def _search() -> ImageSearch:
        detector = state.detectors.for_tenant(state.sessions, tenant.id)
        detections = detector.detect([loaded.image])[0]
        crops = extract_items(
            loaded.image,
            detections,
            min_score=settings.detect_min_score if detector.min_score is None else detector.min_score,
            min_area=settings.detect_min_area,
            max_items=settings.detect_max_items,
            iou_threshold=settings.detect_iou_threshold,
        )
        vectors = state.embedder.embed([c.crop for c in crops])
        out = []
        with state.sessions() as session:
            for crop, vec in zip(crops, vectors, strict=True):
                found = similar_to_vector(
                    session,
                    tenant_id=tenant.id,
                    vector=vec,
                    model_key=state.embedder.model_key,
                    dim=state.embedder.dim,
                    limit=limit,
                )
                d = crop.detection
                out.append(FoundItem(box=d.box, label=d.label, score=round(d.score, 4), products=_items(found)))
        return ImageSearch(width=loaded.width, height=loaded.height, items=out)

    return await run_in_threadpool(_search)


@text_router.get("", response_model=TextSearch, responses={401: {"model": Problem}, 501: {"model": Problem}})
async def by_text(
    request: Request,
    tenant: StorefrontTenant,
    q: Annotated[str, Query(min_length=1, max_length=200)],
    limit: Annotated[int, Query(ge=1, le=50)] = 10,
) -> TextSearch:
    """Text to image search; needs an embedder with a text tower (CLIP)."""
    state = request.app.state
    if not state.embedder.supports_text:
        raise HTTPException(
            501,
            f"the configured embedder {state.embedder.model_key} cannot embed text; "
            "set VITRINE_EMBEDDER=clip for text search",
        )

    def _search() -> TextSearch:
        vec = state.embedder.embed_text([q])[0]
        with state.sessions() as session:
            found = similar_to_vector(
                session,
                tenant_id=tenant.id,
                vector=vec,
                model_key=state.embedder.model_key,
                dim=state.embedder.dim,
                limit=limit,
            )
        return TextSearch(query=q, items=_items(found))

    return await run_in_threadpool(_search)
