"""Shopify webhooks, accepted as they are sent (no adapter needed on the retailer's side).

Product topics become catalog events (202); any other topic, once its signature is verified, is
acknowledged with 200 and counted: Shopify retries a non-2xx answer for hours.
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from db.tenants import active_webhook_secrets
from recommender import ingress, shopify
from recommender.errors import JSONRoute, error_detail
from recommender.routes.catalog import MAX_BODY_BYTES, TENANT_ID, load_tenant, read_capped_body, reject
from recommender.schemas import Accepted, Problem


class Ignored(BaseModel):
    ignored: str = Field(description="The Shopify topic, acknowledged and counted; vitrine does not use it")


router = APIRouter(prefix="/v1/catalog/shopify", tags=["catalog"], route_class=JSONRoute, max_body_size=MAX_BODY_BYTES)


@router.post(
    "/{tenant_id}",
    status_code=202,
    response_model=Accepted,
    responses={
        200: {"model": Ignored, "description": "A topic vitrine does not use: acknowledged so Shopify stops"},
        401: {"model": Problem},
        404: {"model": Problem},
        413: {"model": Problem},
        422: {"model": Problem},
        503: {"model": Problem},
    },
    summary="Receive Shopify webhooks for a tenant (products/create|update|delete; other topics acknowledged)",
)
async def shopify_webhook(
    request: Request,
    tenant_id: Annotated[str, Path(pattern=TENANT_ID)],
    x_shopify_topic: Annotated[str, Header()],
    x_shopify_webhook_id: Annotated[str, Header(min_length=1, max_length=200)],
    x_shopify_hmac_sha256: Annotated[str | None, Header()] = None,
    x_shopify_triggered_at: Annotated[str | None, Header()] = None,
    currency: Annotated[
        str | None,
        Query(pattern=r"^[A-Z]{3}$", description="The shop's ISO 4217 currency (Shopify's payload names none)"),
    ] = None,
):
    body = await read_capped_body(request, MAX_BODY_BYTES)
    tenant = await run_in_threadpool(load_tenant, request, tenant_id)
    if tenant is None:
        raise reject(404, "unknown_tenant", f"unknown tenant {tenant_id!r}")
    if not shopify.verify(x_shopify_hmac_sha256, body, active_webhook_secrets(tenant)):
        raise reject(401, "signature", "X-Shopify-Hmac-Sha256 is missing or does not match the body")
    if x_shopify_topic not in shopify.TOPICS:
        shopify.count_ignored(x_shopify_topic)
        return JSONResponse({"ignored": x_shopify_topic[:100]}, status_code=200)
    try:
        doc = json.loads(body)
        event = shopify.to_event(
            x_shopify_topic,
            doc,
            tenant_id=tenant.id,
            webhook_id=x_shopify_webhook_id,
            triggered_at=x_shopify_triggered_at,
            currency=currency,
        )
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise reject(422, "malformed_json", f"malformed JSON: {exc}") from None
    except RecursionError:
        raise reject(422, "malformed_json", "malformed JSON: nested too deeply") from None
    except ValidationError as exc:
        raise reject(422, "invalid", error_detail(exc.errors(include_url=False))) from None
    except (ValueError, TypeError, AttributeError, OverflowError) as exc:
        raise reject(422, "invalid", f"cannot map the Shopify payload: {str(exc)[:200]}") from None
    return await ingress.accept(request, tenant.id, [event], source="shopify")
