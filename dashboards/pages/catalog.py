"""Catalog explorer: find a product, see its images with the detected item boxes, its neighbours under each
model the tenant can serve (the pretrained embedder and every ready trained model, side by side) and what the
baseline arm would show instead.

Boxes are drawn on a placeholder of the image's stored width x height, not on the image itself:
fetching tenant-supplied URLs from the dashboard server would turn it into an SSRF relay, and
the ingest worker already stored everything the boxes need. The original URL is linked.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st
from PIL import Image, ImageDraw

from dashboards import data, model_data
from dashboards.ui import current_tenant, database_url_or_stop

PLACEHOLDER_MAX = 360  # px: the longest side of a drawn placeholder
COLOURS = ["#e4572e", "#17bebb", "#ffc914", "#76b041", "#2e86ab", "#a23b72", "#f18f01", "#3b1f2b"]


def boxes_on_placeholder(width: int | None, height: int | None, items: list[dict]) -> Image.Image:
    """A grey canvas of the image's aspect ratio with every item box and label drawn, scaled down."""
    w, h = width or 0, height or 0
    if w <= 0 or h <= 0:  # size unknown (not processed yet): infer a canvas from the boxes
        w = int(max([it["box"][2] for it in items] + [PLACEHOLDER_MAX]))
        h = int(max([it["box"][3] for it in items] + [PLACEHOLDER_MAX]))
    scale = PLACEHOLDER_MAX / max(w, h)
    canvas = Image.new("RGB", (max(int(w * scale), 1), max(int(h * scale), 1)), "#d9d9d9")
    draw = ImageDraw.Draw(canvas)
    for i, it in enumerate(items):
        x0, y0, x1, y1 = (v * scale for v in it["box"])
        colour = COLOURS[i % len(COLOURS)]
        draw.rectangle([x0, y0, x1, y1], outline=colour, width=3)
        draw.text((x0 + 4, y0 + 3), f"{it['label']} {it['score']:.2f}", fill=colour)
    return canvas


def distinct_items(items: list[dict]) -> list[dict]:
    """One entry per detected item, with the models that have a vector of it: every deployed model stores its
    own row of each item (same kind, box and label), which would otherwise be drawn and listed once per model."""
    merged: dict[tuple, dict] = {}
    for it in items:
        key = (it["kind"], tuple(it["box"]), it["label"])
        merged.setdefault(key, {**it, "models": []})["models"].append(it["model"])
    return list(merged.values())


def neighbour_frame(rows: list[dict] | None, score_label: str) -> pd.DataFrame:
    """A ranked table of an arm's list."""
    frame = pd.DataFrame(rows or [], columns=["product_id", "title", "category", "price", "score"])
    frame.insert(0, "rank", range(1, len(frame) + 1))
    return frame.rename(columns={"score": score_label})


tenant = current_tenant()
url = database_url_or_stop()
st.title("Catalog explorer")
query = st.text_input("Search products by id or title", placeholder="e.g. sku-123 or 'red dress'").strip()
matches = data.search_products(url, tenant, query)
if not matches:
    if query:
        st.info(f"No product of tenant {tenant} matches {query!r}.")
    else:
        st.info(
            f"The catalog of tenant {tenant} is empty. Push products with `POST /v1/catalog/events` or "
            f"`vitrine catalog import FEED --tenant {tenant}`; they appear here once the worker indexed them."
        )
    st.stop()

labels = {
    m["external_id"]: f"{m['external_id']} — {m['title']}" + (" (deleted)" if m["deleted"] else "") for m in matches
}
pid = st.selectbox(
    f"Product ({len(matches)} match{'es' if len(matches) != 1 else ''})", list(labels), format_func=labels.get
)
product = next(m for m in matches if m["external_id"] == pid)
st.caption(
    f"category **{product['category'] or '–'}** · price {product['price'] if product['price'] is not None else '–'}"
    f" · version {product['version']} · {'in stock' if product['in_stock'] else 'out of stock'} · "
    f"indexed at {product['indexed_at'] or 'never'}"
)

st.subheader("Images and detected items")
images = data.product_images(url, tenant, pid)
if not images:
    st.info("This product has no images.")
cols = st.columns(min(max(len(images), 1), 3))
for i, img in enumerate(images):
    items = distinct_items(img["items"])
    with cols[i % len(cols)]:
        if img["status"] == "failed":
            st.error(f"Image {img['position']} failed: {img['failure_reason'] or 'no reason recorded'}")
        elif img["status"] != "ok":
            st.info(f"Image {img['position']} is {img['status']}.")
        if img["status"] == "ok" or items:
            st.image(
                boxes_on_placeholder(img["width"], img["height"], items),
                caption=f"{img['width']}×{img['height']} px placeholder · {len(items)} item(s)",
            )
        st.markdown(f"[original image]({img['url']})")
        if items:
            st.dataframe(
                pd.DataFrame(
                    [
                        {
                            "kind": it["kind"],
                            "label": it["label"],
                            "score": it["score"],
                            "box": ", ".join(f"{v:.0f}" for v in it["box"]),
                            "vectors of": ", ".join(sorted(it["models"])),
                        }
                        for it in items
                    ]
                ),
                hide_index=True,
                width="stretch",
            )

st.subheader("What each arm would recommend")
settings = data.get_settings()
embedder_key, embedder_dim = data.embedder_identity(settings)
models = model_data.tenant_models(url, tenant)
active = models["active_model"] or embedder_key
# Every model a `visual@<key>` arm can serve for this tenant: the deployed embedder, then each ready deployment.
servable = [(embedder_key, embedder_dim, settings.index_kind)] + [
    (m["model_key"], m["dim"], m["index_kind"]) for m in models["ready"] if m["model_key"] != embedder_key
]
lists = model_data.model_neighbours(url, tenant, pid, tuple(servable))
baseline = data.neighbours(url, tenant, pid, embedder_key, embedder_dim, settings.popularity_half_life_s)["baseline"]
if active not in {key for key, _, _ in servable}:
    st.warning(
        f"The active model `{active}` is not ready to serve: the `visual` arm answers with the baseline until it is "
        "(its progress is on the Pipeline page)."
    )
columns = st.columns(len(servable) + 1)
for col, (key, _, kind) in zip(columns, servable):
    found = lists[key]
    with col:
        role = "pretrained embedder" if key == embedder_key else "trained"
        st.markdown(
            f"**`{key}`**" + (" · **active** (`visual`)" if key == active else "") + f" · {role} · {kind} · "
            f"{found['strategy']}"
        )
        if found["neighbours"] is None:
            st.info(f"No {key} vectors for this product yet (not indexed, or indexed by another embedder).")
        elif not found["neighbours"]:
            st.info("No other in-stock product of this tenant has vectors yet.")
        else:
            st.dataframe(
                neighbour_frame(found["neighbours"], "similarity"),
                hide_index=True,
                width="stretch",
                column_config={
                    "similarity": st.column_config.ProgressColumn(
                        "similarity", min_value=0.0, max_value=1.0, format="%.3f"
                    )
                },
            )
with columns[-1]:
    st.markdown("**baseline** · same category, by decayed popularity")
    if baseline is None:
        st.info("The baseline has nothing for a deleted product.")
    elif not baseline:
        st.info("No other in-stock product in this category.")
    else:
        st.dataframe(
            neighbour_frame(baseline, "popularity"),
            hide_index=True,
            width="stretch",
            column_config={"popularity": st.column_config.NumberColumn(format="%.2f")},
        )
