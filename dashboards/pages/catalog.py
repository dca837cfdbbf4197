"""Catalog explorer: find a product, see its images with the detected item boxes, its visual neighbours and
what the baseline arm would show instead.

Boxes are drawn on a placeholder of the image's stored width x height, not on the image itself:
fetching tenant-supplied URLs from the dashboard server would turn it into an SSRF relay, and
the ingest worker already stored everything the boxes need. The original URL is linked.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st
from PIL import Image, ImageDraw

from dashboards import data
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
    with cols[i % len(cols)]:
        if img["status"] == "failed":
            st.error(f"Image {img['position']} failed: {img['failure_reason'] or 'no reason recorded'}")
        elif img["status"] != "ok":
            st.info(f"Image {img['position']} is {img['status']}.")
        if img["status"] == "ok" or img["items"]:
            st.image(
                boxes_on_placeholder(img["width"], img["height"], img["items"]),
                caption=f"{img['width']}×{img['height']} px placeholder · {len(img['items'])} item(s)",
            )
        st.markdown(f"[original image]({img['url']})")
        if img["items"]:
            st.dataframe(
                pd.DataFrame(
                    [
                        {
                            "kind": it["kind"],
                            "label": it["label"],
                            "score": it["score"],
                            "box": ", ".join(f"{v:.0f}" for v in it["box"]),
                        }
                        for it in img["items"]
                    ]
                ),
                hide_index=True,
                width="stretch",
            )

st.subheader("What each arm would recommend")
settings = data.get_settings()
model_key, dim = data.embedder_identity(settings)
lists = data.neighbours(url, tenant, pid, model_key, dim, settings.popularity_half_life_s)
left, right = st.columns(2)
with left:
    st.markdown(f"**visual** · `{model_key}` · {lists['strategy']}")
    if lists["visual"] is None:
        st.info(f"No {model_key} vectors for this product yet (not indexed, or indexed by another embedder).")
    elif not lists["visual"]:
        st.info("No other in-stock product of this tenant has vectors yet.")
    else:
        st.dataframe(
            neighbour_frame(lists["visual"], "similarity"),
            hide_index=True,
            width="stretch",
            column_config={
                "similarity": st.column_config.ProgressColumn("similarity", min_value=0.0, max_value=1.0, format="%.3f")
            },
        )
with right:
    st.markdown("**baseline** · same category, by decayed popularity")
    if lists["baseline"] is None:
        st.info("The baseline has nothing for a deleted product.")
    elif not lists["baseline"]:
        st.info("No other in-stock product in this category.")
    else:
        st.dataframe(
            neighbour_frame(lists["baseline"], "popularity"),
            hide_index=True,
            width="stretch",
            column_config={"popularity": st.column_config.NumberColumn(format="%.2f")},
        )
