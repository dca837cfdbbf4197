"""Latent map: the tenant's catalog as each servable model sees it, one point per product in 2-D (UMAP), coloured
by category, with the product's thumbnail on hover; two models side by side, the hovered product highlighted in
both, so an operator can see clusters and outliers and what a trained model changed.

The data and the projection are `dashboards.latent` (cached per tenant, model and vector count).
"""

from __future__ import annotations

import warnings

import altair as alt
import pandas as pd
import streamlit as st

from dashboards import data, latent, model_data
from dashboards.ui import current_tenant, database_url_or_stop

SIDE_BY_SIDE_PX = 400  # each map's width when two are drawn (a concatenated chart cannot stretch): 2 fit at 1,280 px
HEIGHT_PX = 480
POINT_SIZE, HOVERED_SIZE = 64, 260  # px^2


def point_frame(maps: dict[str, latent.LatentMap], thumbs: dict[str, str]) -> pd.DataFrame:
    """One row per product: its coordinates in each map (x0, y0, x1, y1; NaN where a model has no vector of it),
    colour group, label and thumbnail. One row, not one per map: the thumbnails (~2 kB each) travel once."""
    rows: dict[str, dict] = {}
    for i, m in enumerate(maps.values()):
        for p, t, c, (x, y) in zip(m.product_ids, m.titles, m.categories, m.xy):
            row = rows.setdefault(p, {"product_id": p, "label": t or p, "category": c or latent.NO_CATEGORY})
            row[f"x{i}"], row[f"y{i}"] = float(x), float(y)
    frame = pd.DataFrame(list(rows.values()), columns=["product_id", "label", "category"])
    for i in range(len(maps)):
        for axis in ("x", "y"):
            frame[f"{axis}{i}"] = [rows[p].get(f"{axis}{i}") for p in frame["product_id"]]
    frame["group"] = latent.colour_groups([None if c == latent.NO_CATEGORY else c for c in frame["category"]])
    frame["image"] = frame["product_id"].map(thumbs).fillna(latent.NO_THUMBNAIL)
    return frame


def map_chart(points: pd.DataFrame, titles: list[str], width: int | None) -> alt.TopLevelMixin:
    """A scatter per map (i-th title: columns x{i}, y{i}) on one data set; hovering a product enlarges it in every
    map (the same product id)."""
    hover = alt.selection_point(
        name="hover", fields=["product_id"], on="pointerover", clear="pointerout", nearest=True, empty=False
    )
    order = sorted(points["group"].unique(), key=lambda g: (g in (latent.OTHER, latent.NO_CATEGORY), g))
    charts = []
    for i, title in enumerate(titles):
        chart = (
            alt.Chart(
                points if len(titles) == 1 else alt.Undefined,
                title=alt.TitleParams(title, limit=width or 0, fontSize=12),  # a long model key is cut, not wider
            )
            .mark_circle(stroke="black")
            .transform_filter(f"isValid(datum.x{i})")
            .encode(
                # padding: points on the extremes are drawn whole, not cut by the frame
                x=alt.X(f"x{i}:Q", axis=None, scale=alt.Scale(zero=False, nice=False, padding=12)),
                y=alt.Y(f"y{i}:Q", axis=None, scale=alt.Scale(zero=False, nice=False, padding=12)),
                color=alt.Color(
                    "group:N",
                    title="category",
                    scale=alt.Scale(domain=order),
                    legend=alt.Legend(orient="bottom", columns=6),
                ),
                size=alt.condition(hover, alt.value(HOVERED_SIZE), alt.value(POINT_SIZE)),
                strokeWidth=alt.condition(hover, alt.value(2), alt.value(0)),
                opacity=alt.value(0.85),
                # each point's accessible label (SVG aria-label): its title, not every tooltip field's value
                description=alt.Description("label:N"),
                # vega-tooltip draws a field titled "title" as the heading and one titled "image" as a picture
                tooltip=[
                    alt.Tooltip("label:N", title="title"),
                    alt.Tooltip("image:N", title="image"),
                    alt.Tooltip("product_id:N", title="product"),
                    alt.Tooltip("category:N", title="category"),
                ],
            )
            .properties(height=HEIGHT_PX, **({"width": width} if width else {}))
        )
        charts.append(chart)
    combined = charts[0] if len(charts) == 1 else alt.hconcat(*charts, data=points)
    with warnings.catch_warnings():
        # Altair adds the one hover parameter to each map, then merges the copies back (with views for both),
        # and warns that it merged them: that merge is the point here.
        warnings.filterwarnings("ignore", message="Automatically deduplicated selection parameter")
        return combined.add_params(hover)


tenant = current_tenant()
url = database_url_or_stop()
st.title("Latent map")
settings = data.get_settings()
embedder_key, _ = data.embedder_identity(settings)
models = model_data.tenant_models(url, tenant)
active = models["active_model"] or embedder_key
# The models a `visual@<key>` arm can serve for this tenant: the deployed embedder, then each ready deployment.
servable = [embedder_key] + [m["model_key"] for m in models["ready"] if m["model_key"] != embedder_key]
signatures = {key: latent.vector_signature(url, tenant, key) for key in servable}
if not any(signature[0] for signature in signatures.values()):
    st.info(
        f"Tenant {tenant} has no product vectors yet: products appear here once the worker has indexed their "
        f"images (push them with `POST /v1/catalog/events` or `vitrine catalog import FEED --tenant {tenant}`)."
    )
    st.stop()


def describe(key: str) -> str:
    """A model's name in the picker: its role, whether the `visual` arm serves it, its product count."""
    role = "pretrained embedder" if key == embedder_key else "trained"
    return f"{key} · {role}" + (" · active" if key == active else "") + f" · {signatures[key][0]:,} products"


trained = [k for k in servable if k != embedder_key]
default = [embedder_key] + ([active] if active in trained else trained[:1])
chosen = st.multiselect(
    "Models (one, or two side by side)", servable, default=default, format_func=describe, max_selections=2
)
if not chosen:
    st.info("Pick a model to draw its map.")
    st.stop()

maps: dict[str, latent.LatentMap] = {}
for key in chosen:
    if signatures[key][0] == 0:
        st.warning(f"`{key}` has no vectors of tenant {tenant}'s products yet: no map for it.")
        continue
    maps[key] = latent.latent_map(url, tenant, key, signatures[key])
if not maps:
    st.stop()

ids = sorted({p for m in maps.values() for p in m.product_ids})
thumbs = latent.hover_thumbnails(url, tenant, tuple(ids))
titles = [
    f"{key} ({'pretrained' if key == embedder_key else 'trained'}{', active' if key == active else ''}) · "
    f"{m.method.upper()} of {len(m.product_ids):,} × {m.dim}-d"
    for key, m in maps.items()
]
chart = map_chart(point_frame(maps, thumbs), titles, SIDE_BY_SIDE_PX if len(maps) > 1 else None)
st.altair_chart(chart, width="stretch" if len(maps) == 1 else "content")

st.caption(
    "Each point is one product (not deleted) with a vector of the model: the whole-image vector of its first "
    "image, the one a product page's kNN query starts from. Positions are a UMAP "
    f"(n_neighbors={latent.UMAP_NEIGHBOURS}, min_dist={latent.UMAP_MIN_DIST}, seed {latent.UMAP_SEED}; PCA under "
    f"{latent.UMAP_MIN_PRODUCTS} products) of the L2-normalised vectors (euclidean: the same neighbours as "
    "cosine); axes have no units and two maps are not aligned, so compare clusters and outliers, not positions. "
    "Colour: category "
    f"(the {latent.TOP_CATEGORIES} most common; the rest as '{latent.OTHER}'). Hover a point for its thumbnail"
    + ("; the same product is enlarged in the other map." if len(maps) > 1 else ".")
)
for key, m in maps.items():
    notes = list(m.notes)
    if m.method == "pca":
        notes.append(
            f"only {len(m.product_ids)} products, fewer than the {latent.UMAP_MIN_PRODUCTS} UMAP needs: "
            "positions are the first two principal components (PCA)"
        )
    missing = sum(p not in thumbs for p in m.product_ids)
    if missing:
        notes.append(f"{missing:,} product(s) without a stored thumbnail (indexed before thumbnails were kept)")
    if notes:
        st.info(f"`{key}`: " + "; ".join(notes) + ".")
    st.caption(
        f"`{key}`: {m.total:,} products with a vector; projected in {m.seconds:.1f} s, kept until its vectors change."
    )
