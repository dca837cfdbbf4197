"""The dashboards' reads about the models a tenant serves: the active one, its rollback target, the ready ones
and each model's neighbours of a product.

Cached like `dashboards.data` (keyed by the database URL first); every query is scoped to one tenant.
Deployments with their re-embed progress come with the catalog health (`db.status.catalog_status`).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import streamlit as st

from dashboards.data import HEALTH_TTL_S, LIST_TTL_S, engine
from db.session import session_factory


def _session(database_url: str):
    return session_factory(engine(database_url))()


@st.cache_data(ttl=HEALTH_TTL_S, show_spinner=False)
def tenant_models(database_url: str, tenant_id: str) -> dict[str, Any]:
    """The tenant's active model and rollback target (None: the deployed embedder / none) and its ready models.

    `ready` lists {model_key, dim, index_kind} of every `ready` deployment (`db.deployments.servable_models`),
    sorted by key: with the deployed embedder, exactly the models a `visual@<key>` arm can serve.
    """
    from db.deployments import servable_models
    from db.models import Tenant

    with _session(database_url) as session:
        tenant = session.get(Tenant, tenant_id)
        ready = servable_models(session, tenant_id)
        return {
            "active_model": tenant.active_model if tenant else None,
            "previous_model": tenant.previous_model if tenant else None,
            "ready": [
                {"model_key": m.key, "dim": m.dim, "index_kind": m.index_kind}
                for m in sorted(ready.values(), key=lambda m: m.key)
            ],
        }


@st.cache_data(ttl=LIST_TTL_S, show_spinner="Finding each model's neighbours…")
def model_neighbours(
    database_url: str, tenant_id: str, external_id: str, models: tuple[tuple[str, int, str], ...], limit: int = 10
) -> dict[str, dict[str, Any]]:
    """Per model key: the product's kNN list under that model (`db.vector_queries.similar_products`, as the
    `visual@<key>` arm searches it) and the strategy used; `models` are (key, dim, index kind)."""
    from db.vector_queries import similar_products

    out: dict[str, dict[str, Any]] = {}
    with _session(database_url) as session, session.begin():
        for key, dim, kind in models:
            found = similar_products(
                session,
                tenant_id=tenant_id,
                external_id=external_id,
                model_key=key,
                dim=dim,
                limit=limit,
                index_kind=kind,
            )
            out[key] = {
                "neighbours": None
                if found.neighbours is None
                else [asdict(n) | {"score": n.score} for n in found.neighbours],
                "strategy": found.strategy,
            }
    return out
