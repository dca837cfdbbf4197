"""Catalog explorer: find a product, see its images with the detected item boxes, its neighbours under each
model the tenant can serve (the pretrained embedder and every ready trained model, side by side) and what the
baseline arm would show instead.

Pictures are the thumbnails the ingest worker stored with each image (`product_images.thumbnail`, a small
WebP, `vision.image.make_thumbnail`): the item boxes, stored in the original image's pixels, are scaled onto
the thumbnail, and each arm's top neighbours are shown as a grid of their first picture, read for the whole
page in one query (`data.product_thumbnails`). The page never fetches a tenant-supplied URL: that would
turn the dashboard server into an SSRF relay. An image stored without a thumbnail (indexed before
migration 0012, until its bytes are next downloaded) is drawn as a grey placeholder of its stored
width x height with the same boxes. The original URL is linked, for the viewer's own browser to open.
"""

from __future__ import annotations

import io
import logging

import pandas as pd
import streamlit as st
from PIL import Image, ImageDraw, ImageFont

from dashboards import data, model_data
from dashboards.ui import current_tenant, database_url_or_stop
from vision.image import pil_open

log = logging.getLogger(__name__)

PLACEHOLDER_MAX = 360  # px: the longest side of a drawn placeholder
TILE = 192  # px: the side of a square neighbour tile (thumbnails are at most 256 px)
GRID_NEIGHBOURS = 6  # neighbours drawn as pictures per arm; the table below lists all of them
COLOURS = ["#e4572e", "#17bebb", "#ffc914", "#76b041", "#2e86ab", "#a23b72", "#f18f01", "#3b1f2b"]
GREY = "#d9d9d9"
EDGE = "#e6e6e6"  # a tile's frame: white product shots on the white page would have no edge


def decode_thumbnail(thumbnail: bytes | None) -> Image.Image | None:
    """The stored thumbnail as an RGB image; None when there is none or it does not decode."""
    if not thumbnail:
        return None
    try:
        with pil_open(io.BytesIO(thumbnail)) as im:
            return im.convert("RGB")
    except Exception as exc:  # a damaged row must not take the page down: the placeholder says enough
        log.warning("stored thumbnail does not decode: %r", exc)
        return None


def draw_boxes(canvas: Image.Image, items: list[dict], sx: float, sy: float) -> Image.Image:
    """Draw every item box (original-image pixels, scaled by sx, sy) and its label on `canvas`."""
    draw = ImageDraw.Draw(canvas)
    for i, it in enumerate(items):
        x0, y0, x1, y1 = it["box"]
        colour = COLOURS[i % len(COLOURS)]
        draw.rectangle([x0 * sx, y0 * sy, x1 * sx, y1 * sy], outline=colour, width=2)
        draw.text((x0 * sx + 4, y0 * sy + 3), f"{it['label']} {it['score']:.2f}", fill=colour, font=_font(12))
    return canvas


def boxes_on_thumbnail(thumb: Image.Image, width: int | None, height: int | None, items: list[dict]) -> Image.Image:
    """The item boxes drawn on the thumbnail, scaled by its real size against the stored image size."""
    if not width or not height:  # never written without a size; if so, assume the boxes fit the thumbnail
        width, height = thumb.size
    return draw_boxes(thumb.copy(), items, thumb.width / width, thumb.height / height)


def boxes_on_placeholder(width: int | None, height: int | None, items: list[dict]) -> Image.Image:
    """A grey canvas of the image's aspect ratio with every item box and label drawn, scaled down."""
    w, h = width or 0, height or 0
    if w <= 0 or h <= 0:  # size unknown (not processed yet): infer a canvas from the boxes
        w = int(max([it["box"][2] for it in items] + [PLACEHOLDER_MAX]))
        h = int(max([it["box"][3] for it in items] + [PLACEHOLDER_MAX]))
    scale = PLACEHOLDER_MAX / max(w, h)
    canvas = Image.new("RGB", (max(int(w * scale), 1), max(int(h * scale), 1)), GREY)
    return draw_boxes(canvas, items, scale, scale)


def tile(thumbnail: bytes | None) -> Image.Image:
    """A square tile for a neighbour grid: the thumbnail centred on white (as storefronts show cut-outs),
    or a grey square that says there is no picture."""
    canvas = Image.new("RGB", (TILE, TILE), "white")
    draw = ImageDraw.Draw(canvas)
    thumb = decode_thumbnail(thumbnail)
    if thumb is None:
        canvas.paste(GREY, (0, 0, TILE, TILE))
        font = _font(24)
        _, _, w, h = draw.textbbox((0, 0), "no picture", font=font)  # centred by hand: bitmap fonts take no anchor
        draw.text(((TILE - w) // 2, (TILE - h) // 2), "no picture", fill="#555555", font=font)
        return canvas
    thumb.thumbnail((TILE - 4, TILE - 4), Image.Resampling.LANCZOS)
    canvas.paste(thumb, ((TILE - thumb.width) // 2, (TILE - thumb.height) // 2))
    draw.rectangle([0, 0, TILE - 1, TILE - 1], outline=EDGE, width=1)
    return canvas


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's bundled font at `size` px (its bitmap fallback, of one size, where FreeType is missing)."""
    return ImageFont.load_default(size=size)


def neighbour_grid(rows: list[dict], pictures: dict[str, bytes | None], per_row: int, score_format: str) -> None:
    """The first GRID_NEIGHBOURS of a ranked list as picture tiles, `per_row` a row, captioned id · score."""
    top = rows[:GRID_NEIGHBOURS]
    for start in range(0, len(top), per_row):
        for cell, n in zip(st.columns(per_row, gap="small"), top[start : start + per_row]):
            with cell:
                st.image(
                    tile(pictures.get(n["product_id"])),
                    caption=f"{n['product_id']} · {n['score']:{score_format}}",
                    width="stretch",
                )


def neighbour_frame(rows: list[dict] | None, score_label: str) -> pd.DataFrame:
    """A ranked table of an arm's list."""
    frame = pd.DataFrame(rows or [], columns=["product_id", "title", "category", "price", "score"])
    frame.insert(0, "rank", range(1, len(frame) + 1))
    return frame.rename(columns={"score": score_label})


tenant = current_tenant()
url = database_url_or_stop()
st.title("Catalog explorer")
# ?product=<id> opens that product (a deep link); the address bar follows the product shown.
if "catalog_query" not in st.session_state:
    st.session_state["catalog_query"] = st.query_params.get("product", "")
query = st.text_input(
    "Search products by id or title", key="catalog_query", placeholder="e.g. sku-123 or 'red dress'"
).strip()
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
st.query_params["product"] = pid
st.query_params["tenant"] = tenant
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
    items = img["items"]  # each detected item once, with the models that have its vector (data.product_images)
    with cols[i % len(cols)]:
        if img["status"] == "failed":
            st.error(f"Image {img['position']} failed: {img['failure_reason'] or 'no reason recorded'}")
        elif img["status"] != "ok":
            st.info(f"Image {img['position']} is {img['status']}.")
        thumb = decode_thumbnail(img["thumbnail"])
        if thumb is not None:
            st.image(
                boxes_on_thumbnail(thumb, img["width"], img["height"], items),
                caption=f"{img['width']}×{img['height']} px, shown at {thumb.width}×{thumb.height} · "
                f"{len(items)} item(s)",
                output_format="PNG",  # lossless: thin box lines and labels stay sharp
            )
        elif img["status"] == "ok" or items:
            st.image(
                boxes_on_placeholder(img["width"], img["height"], items),
                caption=f"{img['width']}×{img['height']} px placeholder (no thumbnail stored) · {len(items)} item(s)",
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
                            "vectors of": ", ".join(it["models"]),
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
# One query for every picture of the page's grids; 2 tiles a row from 3 arms on (a readable ~120 px at 1280 px).
shown = {n["product_id"] for f in lists.values() for n in (f["neighbours"] or [])[:GRID_NEIGHBOURS]}
shown |= {n["product_id"] for n in (baseline or [])[:GRID_NEIGHBOURS]}
pictures = data.product_thumbnails(url, tenant, tuple(sorted(shown)))
per_row = 3 if len(servable) + 1 <= 2 else 2
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
            neighbour_grid(found["neighbours"], pictures, per_row, ".3f")
            with st.expander(f"All {len(found['neighbours'])} as a table"):
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
        neighbour_grid(baseline, pictures, per_row, ".2f")
        with st.expander(f"All {len(baseline)} as a table"):
            st.dataframe(
                neighbour_frame(baseline, "popularity"),
                hide_index=True,
                width="stretch",
                column_config={"popularity": st.column_config.NumberColumn(format="%.2f")},
            )
