"""The latent map on a real Postgres: one vector per product (the first image's whole-image item) of each model,
a tenant's vectors and thumbnails only, the seeded cap, PCA for a tiny catalog, real UMAP on 40 points, and the
page under Streamlit's AppTest (its charts, and the message for a tenant without vectors)."""

from __future__ import annotations

import base64
import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import text
from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df

from core.contracts import CatalogEvent
from db.catalog import DerivedModel, ImageResult, ItemRow, upsert_product
from db.models import ModelDeployment, Tenant
from db.tenants import create_tenant
from tests.dashboards.helpers import page, served_dashboard, texts
from tests.dashboards.seed import ROOT
from tests.helpers import settings_env
from vision.image import make_thumbnail

pytestmark = pytest.mark.integration

SHOP, OTHER, BARE = "map-shop", "map-other", "map-bare"
TRAINED = "trained-map"  # SHOP's ready trained model (4-d)
OTHER_ONLY = "other-map-secret"  # a ready model of OTHER only: never offered to SHOP
RED, GREEN = (220, 30, 30), (30, 200, 30)  # SHOP's thumbnails are red, OTHER's green
ARTIFACTS = ROOT / "test-artifacts" / "dashboards"


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def _thumbnail(colour: tuple[int, int, int]) -> bytes:
    return make_thumbnail(Image.new("RGB", (400, 300), colour))


def _add(session, tenant: str, pid: str, vectors: list[np.ndarray], dim: int, key: str, *, category: str, thumb):
    """A product with one image per vector (position = index), each with its whole-image item; a 4-d trained
    head (the first 4 backbone components) written beside it; `thumb` on the first image only."""
    urls = [f"https://img.example.com/{tenant}/{pid}-{i}.jpg" for i in range(len(vectors))]
    event = CatalogEvent(
        event_id=f"ev-{tenant}-{pid}",
        tenant_id=tenant,
        type="product.upserted",
        product={"id": pid, "version": 1, "title": f"{category} {pid}", "category": category, "image_urls": urls},
    )
    images = [
        ImageResult(
            url,
            i,
            "ok",
            content_hash=f"h-{tenant}-{pid}-{i}",
            width=400,
            height=300,
            items=[ItemRow("whole", (0, 0, 400, 300), "whole image", 1.0, v)],
            thumbnail=thumb if i == 0 else None,
        )
        for i, (url, v) in enumerate(zip(urls, vectors))
    ]
    heads = [DerivedModel(TRAINED if tenant == SHOP else OTHER_ONLY, 4, lambda b: b[:, :4].copy())]
    upsert_product(session, event, images, model_key=key, dim=dim, derived={tenant: heads})


def _deployment(tenant: str, key: str) -> ModelDeployment:
    return ModelDeployment(
        tenant_id=tenant,
        model_key=key,
        source_key="efficientnet-lite0@imagenet1k-0.1.0",
        dim=4,
        artefact_path=f"/models/{key}.vtm",
        status="ready",
        phase="done",
        items_done=5,
        items_total=5,
        index_kind="halfvec",
    )


@pytest.fixture
def shop(settings, sessions, monkeypatch):
    """SHOP: five live products (two clusters: s-1..s-3 'bags', s-4..s-5 'shoes') with two images each, plus a
    deleted s-6; OTHER: the same ids s-1, s-2 with vectors of their own and an o-3; BARE: a tenant, no products.
    Returns (embedder key, dim, {product: expected embedder vector (its first image's, normalised)})."""
    import streamlit as st

    from dashboards import data

    for k, v in settings_env(settings).items():
        monkeypatch.setenv(k, v)
    st.cache_data.clear()
    key, dim = data.embedder_identity(settings)
    rng = np.random.default_rng(5)
    centres = {"bags": rng.normal(size=dim), "shoes": rng.normal(size=dim)}
    expected = {}
    with sessions() as session, session.begin():
        for tenant in (SHOP, OTHER, BARE):
            create_tenant(session, tenant.title(), tenant)
        for i in range(1, 7):
            category = "bags" if i <= 3 else "shoes"
            first, second = (_unit(centres[category] + 0.3 * rng.normal(size=dim)) for _ in range(2))
            thumb = _thumbnail(RED) if i != 2 else None  # s-2 was indexed before thumbnails were kept
            _add(session, SHOP, f"s-{i}", [first, second], dim, key, category=category, thumb=thumb)
            expected[f"s-{i}"] = first
        for pid in ("s-1", "s-2", "o-3"):
            _add(session, OTHER, pid, [_unit(rng.normal(size=dim))], dim, key, category="hats", thumb=_thumbnail(GREEN))
        session.execute(
            text("UPDATE products SET deleted = true WHERE tenant_id = :t AND external_id = 's-6'"), {"t": SHOP}
        )
        del expected["s-6"]
        session.add_all([_deployment(SHOP, TRAINED), _deployment(OTHER, OTHER_ONLY)])
        session.flush()
        session.get(Tenant, SHOP).active_model = TRAINED
    yield key, dim, expected
    # The app's pooled connections would otherwise keep Postgres from shutting down at the end of the run.
    data.engine(settings.database_url).dispose()
    data.engine.clear()


def test_vectors_are_the_first_images_of_the_tenants_live_products(shop, settings):
    from dashboards import latent

    key, dim, expected = shop
    url = settings.database_url
    found = latent.read_vectors(url, SHOP, key)
    assert found.product_ids == ["s-1", "s-2", "s-3", "s-4", "s-5"]  # not s-6 (deleted), not OTHER's o-3
    assert found.categories == ["bags"] * 3 + ["shoes"] * 2
    assert found.total == 5 and found.notes == []
    assert found.vectors.shape == (5, dim)
    # the first image's vector, not the second's nor OTHER's for the same id (float32 round trip: 1e-6)
    np.testing.assert_allclose(found.vectors, np.stack([expected[p] for p in found.product_ids]), atol=1e-6)
    trained = latent.read_vectors(url, SHOP, TRAINED)
    np.testing.assert_allclose(
        trained.vectors, np.stack([_unit(expected[p][:4]) for p in trained.product_ids]), atol=1e-6
    )
    assert latent.vector_signature(url, SHOP, key)[0] == 5
    assert latent.vector_signature(url, OTHER, key)[0] == 3
    assert latent.vector_signature(url, SHOP, OTHER_ONLY) == (0, 0, "")  # OTHER's model has no SHOP vectors
    assert latent.read_vectors(url, SHOP, OTHER_ONLY).product_ids == []
    assert latent.read_vectors(url, BARE, key).total == 0


def test_an_undecodable_thumbnail_is_none_even_after_ultralytics_patched_pil():
    """ultralytics replaces PIL.Image.open process-wide (an unknown format then tries to install pi-heif and
    raises ImportError); the dashboards open thumbnails with the original opener, whatever ran before."""
    import ultralytics  # noqa: F401  the patch happens on import, as in a worker or after a detector test

    from dashboards import latent

    assert latent.hover_thumbnail(b"not an image") is None


def test_hover_thumbnails_are_the_tenants_own_and_small(shop, settings):
    from dashboards import latent

    thumbs = latent.hover_thumbnails(settings.database_url, SHOP, ("s-1", "s-2", "s-3", "o-3"))
    assert set(thumbs) == {"s-1", "s-3"}  # s-2 has none stored; o-3 is OTHER's
    for data_url in thumbs.values():
        prefix, b64 = data_url.split(",", 1)
        assert prefix == "data:image/webp;base64"
        with Image.open(io.BytesIO(base64.b64decode(b64))) as im:
            assert max(im.size) == latent.HOVER_SIDE  # 400 x 300 -> 256 x 192 stored -> 80 x 60
            r, g, b = im.convert("RGB").getpixel((im.width // 2, im.height // 2))
        assert r > 150 and g < 80  # SHOP's red, never OTHER's green thumbnail of the same id
    assert latent.hover_thumbnail(b"not an image") is None


def test_the_cap_takes_the_same_seeded_sample_every_time(shop, settings):
    from dashboards import latent

    key, _, _ = shop
    first = latent.read_vectors(settings.database_url, SHOP, key, max_products=3)
    again = latent.read_vectors(settings.database_url, SHOP, key, max_products=3)
    assert len(first.product_ids) == 3 and first.product_ids == again.product_ids
    assert set(first.product_ids) <= {"s-1", "s-2", "s-3", "s-4", "s-5"}
    assert first.total == 5
    assert first.notes == ["a seeded sample of 3 of the 5 products (the map's cap)"]


def test_a_small_catalog_is_mapped_by_pca(shop, settings):
    from dashboards import latent

    key, _, _ = shop
    signature = latent.vector_signature(settings.database_url, SHOP, key)
    m = latent.latent_map(settings.database_url, SHOP, key, signature)
    assert m.method == "pca" and m.xy.shape == (5, 2) and m.total == 5
    # the two clusters (bags s-1..s-3, shoes s-4..s-5) lie on either side of the first component
    first = dict(zip(m.product_ids, m.xy[:, 0]))
    assert len({np.sign(first[p]) for p in ("s-1", "s-2", "s-3")}) == 1
    assert {np.sign(first[p]) for p in ("s-4", "s-5")} == {-np.sign(first["s-1"])}


def test_umap_on_40_points_keeps_clusters_apart_and_is_reproducible():
    from dashboards import latent

    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(4), 10)
    centres = rng.normal(size=(4, 64))
    vectors = np.stack([_unit(centres[c] + 0.35 * rng.normal(size=64)) for c in labels])
    xy, method = latent.project(vectors)
    assert method == "umap" and xy.shape == (40, 2)
    # every point's nearest neighbour on the map belongs to its own cluster
    d = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    assert (labels[d.argmin(axis=1)] == labels).all()
    again, _ = latent.project(vectors)
    np.testing.assert_allclose(again, xy)  # the fixed seed: the same map on every render


def _charts(at) -> list[tuple[dict, dict]]:
    """(spec, {dataset name: frame}) of every Vega-Lite chart on the page."""
    return [
        (json.loads(e.proto.spec), {d.name: convert_arrow_bytes_to_pandas_df(d.data.data) for d in e.proto.datasets})
        for e in at.get("vega_lite_chart")
    ]


def test_page_draws_the_pretrained_and_the_trained_map_side_by_side(shop, settings):
    from dashboards import latent

    key, dim, _ = shop
    at = page("latent_map", SHOP)
    assert not at.exception, at.exception
    assert at.title[0].value == "Latent map"
    [picker] = at.multiselect
    assert picker.value == [key, TRAINED]  # the pretrained embedder and the active trained model
    assert OTHER_ONLY not in picker.options and all(OTHER_ONLY not in o for o in picker.options)
    [(spec, frames)] = _charts(at)
    assert [sub["title"]["text"] for sub in spec["hconcat"]] == [
        f"{key} (pretrained) · PCA of 5 × {dim}-d",
        f"{TRAINED} (trained, active) · PCA of 5 × 4-d",
    ]
    [points] = frames.values()  # one data set for both maps: each thumbnail travels once
    points = points.set_index("product_id")
    assert sorted(points.index) == ["s-1", "s-2", "s-3", "s-4", "s-5"]  # never OTHER's o-3 nor deleted s-6
    assert points.loc["s-1", "image"].startswith("data:image/webp;base64,")
    assert points.loc["s-2", "image"] == latent.NO_THUMBNAIL  # none stored: the point is drawn, labelled so
    assert points.loc["s-4", "group"] == "shoes"
    for i, model in enumerate((key, TRAINED)):  # map i draws x{i}, y{i}: that model's PCA of its own vectors
        found = latent.read_vectors(settings.database_url, SHOP, model)
        np.testing.assert_allclose(points.loc[found.product_ids, [f"x{i}", f"y{i}"]], latent.pca_2d(found.vectors))
    tooltip = [t["title"] for t in spec["hconcat"][0]["encoding"]["tooltip"]]
    assert tooltip[:2] == ["title", "image"]  # what vega-tooltip draws as heading and picture
    body = texts(at)
    assert "Each point is one product" in body and "whole-image vector of its first image" in body
    assert "fewer than the 15 UMAP needs" in body and "principal components (PCA)" in body
    assert "1 product(s) without a stored thumbnail" in body

    picker.set_value([TRAINED]).run()  # one model: one map
    assert not at.exception, at.exception
    [(spec, _)] = _charts(at)
    assert "hconcat" not in spec and spec["title"]["text"].startswith(TRAINED)


def test_page_says_so_when_the_tenant_has_no_vectors(shop):
    at = page("latent_map", BARE)
    assert not at.exception, at.exception
    assert not _charts(at) and not at.multiselect
    assert f"Tenant {BARE} has no product vectors yet" in texts(at)


# --- in a real browser: the hover thumbnail is drawn by Streamlit's Vega tooltip ------------------------------

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
PASSWORD = "latent map test password"  # a throwaway operator password for this test's dashboard
WAIT_S = 60
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1600,1400",
]
TOOLTIP_JS = """
const tip = document.getElementById('vg-tooltip-element');
if (!tip || !tip.classList.contains('visible')) return null;
const img = tip.querySelector('img');
return [tip.innerText, img && img.getAttribute('src').split(',')[0], img && img.complete && img.naturalWidth];
"""


@pytest.fixture
def dashboard(shop, settings, tmp_path):
    """`vitrine dashboard` on a free port with an operator password; yields its URL."""
    with served_dashboard(settings, tmp_path, PASSWORD) as url:
        yield url


@pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="apt-get install -y chromium chromium-driver")
def test_hovering_a_point_shows_its_thumbnail_in_chromium(dashboard, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium (a dev extra)")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={tmp_path / 'chromium'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    wait = WebDriverWait(driver, WAIT_S)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        driver.get(dashboard)
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "input[type='password']"))).send_keys(PASSWORD)
        driver.find_element(By.XPATH, "//button[contains(., 'Sign in')]").click()
        wait.until(lambda d: "Latent map" in d.find_element(By.TAG_NAME, "body").text)  # the page is in the nav
        driver.get(f"{dashboard}/latent-map?tenant={SHOP}")  # the sign-in cookie carries over
        # Streamlit draws Vega charts as SVG: a point is a symbol whose aria-label is its description (the title)
        points = wait.until(
            lambda d: d.find_elements(By.CSS_SELECTOR, ".vega-embed path[role='graphics-symbol'][aria-label]")
        )
        by_label = {}
        for point in points:
            by_label.setdefault(point.get_attribute("aria-label"), []).append(point)
        assert sorted(by_label) == [f"bags s-{i}" for i in (1, 2, 3)] + [f"shoes s-{i}" for i in (4, 5)]
        assert all(len(both) == 2 for both in by_label.values())  # one point per map
        ActionChains(driver).move_to_element(by_label["bags s-1"][0]).perform()
        shown = wait.until(lambda d: d.execute_script(TOOLTIP_JS))
        tip, src, _ = shown
        assert src == "data:image/webp;base64"
        # decoded by the browser (a broken data URL has naturalWidth 0): latent.HOVER_SIDE, 400 x 300 -> 80 x 60
        assert wait.until(lambda d: d.execute_script(TOOLTIP_JS)[2]) == 80
        assert "bags s-1" in tip and "s-1" in tip and "category" in tip
        # the same product is enlarged in the other map: a Vega symbol's radius is sqrt(size) / 2, so the page's
        # HOVERED_SIZE 260 gives 8.062 px and POINT_SIZE 64 gives 4 px
        assert by_label["bags s-1"][1].get_attribute("d").startswith("M8.062,")
        assert by_label["bags s-3"][1].get_attribute("d").startswith("M4,")
        driver.save_screenshot(str(ARTIFACTS / "latent-map-hover.png"))
        ActionChains(driver).move_to_element(by_label["bags s-2"][0]).perform()  # no stored thumbnail
        shown = wait.until(
            lambda d: (d.execute_script(TOOLTIP_JS) or [""])[0].startswith("bags s-2") and d.execute_script(TOOLTIP_JS)
        )
        assert shown[1] == "data:image/svg+xml;base64"  # the 'no thumbnail' picture, not <img src="null">
    except Exception:
        driver.save_screenshot(str(ARTIFACTS / "failed-latent-map.png"))
        raise
    finally:
        driver.quit()
