"""Every page under Streamlit's AppTest against a real Postgres with known data: the numbers shown
are exactly those of `db.experiment_stats.analyze` (and of the db/recommender reads), and the
empty states explain themselves instead of raising."""

from __future__ import annotations

import io
import socket

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from dashboards.ui import pct, verdict
from db.experiment_stats import analyze
from experiments.analysis import ReportOptions
from tests.dashboards.helpers import TIMEOUT_S, page, texts
from tests.dashboards.seed import (
    APP_DIR,
    EMPTY_EXPERIMENT,
    EMPTY_TENANT,
    EXPERIMENT,
    ITEM_BOX,
    NO_THUMBNAIL,
    TENANT,
    USERS,
    photo,
)

pytestmark = pytest.mark.integration


def kinds(node, out: list[str] | None = None) -> list[str]:
    """The element types of the page tree, depth first (charts have no typed accessor in AppTest)."""
    out = [] if out is None else out
    for child in getattr(node, "children", {}).values():
        out.append(child.type)
        kinds(child, out)
    return out


def charts(at: AppTest) -> int:
    """How many Vega-Lite (Altair) charts the page shows."""
    return sum("vega" in k for k in kinds(at._tree))


def _report(db_engine, **options):
    with db_engine.connect() as conn:
        return analyze(conn, TENANT, EXPERIMENT, ReportOptions(**options))


def test_sign_in_gate(seeded):
    at = AppTest.from_file(str(APP_DIR / "app.py"), default_timeout=TIMEOUT_S).run()
    assert not at.exception
    assert [b.label for b in at.button] == ["Sign in"] and len(at.get("form")) == 1  # the form's submit button
    at.text_input[0].input("vak_wrong")  # a form: the value is sent with the submit click
    at.button[0].click().run()
    assert "not valid" in texts(at)
    at.text_input[0].input(seeded.admin_key)
    at.button[0].click().run()
    assert not at.exception
    assert at.session_state["allowed_tenants"] == [TENANT]  # a tenant key opens that tenant only
    assert at.session_state["tenant_id"] == TENANT
    assert at.sidebar.selectbox[0].options == [TENANT]


def test_overview_shows_the_report(seeded, db_engine):
    at = page("overview")
    assert not at.exception
    report = _report(db_engine)
    row = next(r for b in report["metrics"] if b["primary"] for r in b["rows"] if not r["is_control"])
    frame = at.dataframe[0].value.set_index("experiment")
    shown = frame.loc[EXPERIMENT]
    assert shown["users"] == sum(a["users"] for a in report["arms"]) == USERS
    assert shown["arm"] == "visual"
    assert shown["lift"] == row["lift"]
    assert [shown["lift CI low"], shown["lift CI high"]] == row["lift_ci"]
    assert shown["p (adjusted)"] == row["p_value_adjusted"]
    assert shown["verdict"] == ("significant" if row["significant"] else "not significant")
    assert report["srm"]["status"] == "ok" and shown["SRM"] == "SRM ok"  # 1,500 users per arm at 50/50
    assert frame.loc[EMPTY_EXPERIMENT]["users"] == 0  # no exposures yet: a row that says so
    assert "no data yet" in frame.loc[EMPTY_EXPERIMENT]["verdict"]


def test_experiment_detail_numbers_equal_analyze(seeded, db_engine):
    at = page("experiment")
    assert not at.exception, at.exception
    report = _report(db_engine)
    frame = at.dataframe[0].value
    expected = [
        (r["n"], r["value"], r["ci"], r.get("lift"), r.get("p_value"), r.get("p_value_adjusted"))
        for b in report["metrics"]
        for r in b["rows"]
    ]
    shown = [
        (
            r["n"],
            r["value"],
            [r["CI low"], r["CI high"]],
            None if r["arm"].endswith("(control)") else r["lift"],
            None if r["arm"].endswith("(control)") else r["p"],
            None if r["arm"].endswith("(control)") else r["p adjusted"],
        )
        for _, r in frame.iterrows()
    ]
    assert shown == expected
    body = texts(at)
    assert verdict(report) in body
    row = next(r for b in report["metrics"] if b["primary"] for r in b["rows"] if not r["is_control"])
    assert row["significant"]  # the seeded 30 % lift on 3,000 users is detectable
    assert f"visual lifts CTR by {pct(row['lift'], signed=False)}" in body
    # the calculator opens on the report's own settings, so it shows the report's power figures
    pw = row["power"]
    assert f"Detectable lift now (MDE): {pct(pw['mde_relative'], signed=False)}" in body
    assert f"{pw['required_n_control']:,}" in body
    assert charts(at) == 2  # cumulative lift with its band, exposures per day


def test_experiment_detail_sequential_band(seeded, db_engine):
    at = page("experiment")
    at.sidebar.toggle[0].set_value(True).run()
    assert not at.exception
    report = _report(db_engine, sequential=True)
    assert report["analysis"] in texts(at)
    assert verdict(report) in texts(at)
    assert "always-valid confidence sequence" in texts(at)
    frame = at.dataframe[0].value
    treatment = frame[~frame["arm"].str.endswith("(control)")]
    assert list(treatment["p"]) == [r["p_value"] for b in report["metrics"] for r in b["rows"] if not r["is_control"]]


def test_draft_experiment_shows_its_state_and_no_results(seeded):
    at = AppTest.from_file(str(APP_DIR / "pages" / "experiment.py"), default_timeout=TIMEOUT_S)
    at.session_state["tenant_id"] = TENANT
    at.session_state["experiment_key"] = EMPTY_EXPERIMENT
    at.run()
    assert not at.exception
    body = texts(at)
    assert "Draft" in body and "A draft has no results" in body
    assert "Results per metric and arm" not in body
    assert [b.label for b in at.button] == []  # not signed in as an admin of the tenant: no start button


@pytest.fixture
def media(monkeypatch) -> dict[str, bytes]:
    """file id -> the bytes of every picture the page hands to Streamlit (AppTest keeps them in memory)."""
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    stored: dict[str, bytes] = {}
    load = MemoryMediaFileStorage.load_and_get_id

    def recording(self, path_or_data, mimetype, kind, filename=None):
        file_id = load(self, path_or_data, mimetype, kind, filename)
        stored[file_id] = path_or_data
        return file_id

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", recording)
    return stored


@pytest.fixture
def no_network(monkeypatch) -> list[object]:
    """Refuse (and record) every name lookup and IP connection: the test's Postgres is on a Unix socket, so a
    page that reads only the database needs none; fetching an image URL would need both."""
    attempts: list[object] = []
    connect = socket.socket.connect

    def lookup(host, *args, **kwargs):
        attempts.append(("getaddrinfo", host))
        raise OSError(f"no network in this test: lookup of {host}")

    def guarded(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(("connect", address))
            raise OSError(f"no network in this test: connect to {address}")
        return connect(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    monkeypatch.setattr(socket.socket, "connect", guarded)
    return attempts


def _picture(element, media: dict[str, bytes]) -> np.ndarray:
    """The pixels Streamlit was given for an st.image element (its URL ends in the media file id)."""
    file_id = element.value[0].rsplit("/", 1)[-1].split(".")[0]
    return np.asarray(Image.open(io.BytesIO(media[file_id])).convert("RGB"), dtype=np.int16)


def test_catalog_explorer(seeded, sessions, media, no_network):
    from db.vector_queries import similar_products
    from recommender.arms.base import ArmRequest
    from recommender.arms.baseline import BaselineArm

    at = page("catalog")
    assert not at.exception
    at.text_input[0].input("p-03").run()
    assert not at.exception, at.exception
    assert at.selectbox[0].value == "p-03"
    with sessions() as session, session.begin():
        visual = similar_products(
            session, tenant_id=TENANT, external_id="p-03", model_key=seeded.model_key, dim=seeded.dim, limit=10
        )
        baseline = BaselineArm().recommend(session, ArmRequest(TENANT, "p-03", 10))
    items, visual_frame, baseline_frame = (d.value for d in at.dataframe)
    assert list(items["label"]) == ["whole image", "dress"]
    assert list(visual_frame["product_id"]) == [n.product_id for n in visual.neighbours]
    assert list(visual_frame["similarity"]) == [n.score for n in visual.neighbours]
    assert set(visual_frame["product_id"][:5]) == {"p-01", "p-02", "p-04", "p-05", "p-06"}  # same cluster first
    assert list(baseline_frame["product_id"]) == [n.product_id for n in baseline.items]

    # The product's image: its stored thumbnail (640x480 -> 256x192), the boxes scaled onto it.
    product, *grid = at.image
    assert product.captions == ["640×480 px, shown at 256×192 · 2 item(s)"]
    pixels = _picture(product, media)
    assert pixels.shape == (192, 256, 3)
    stored = np.asarray(Image.open(io.BytesIO(_thumbnail(sessions, "p-03"))).convert("RGB"), dtype=np.int16)
    x0, y0, x1, y1 = (round(v * 0.4) for v in ITEM_BOX)  # 256 / 640
    inside = (slice(y0 + 16, y1 - 4), slice(x0 + 4, x1 - 4))  # within the dress's box, below its label
    assert np.abs(pixels[inside] - stored[inside]).mean() < 2.0  # the stored picture, not a grey placeholder
    assert tuple(pixels[(y0 + y1) // 2, x0]) == (0x17, 0xBE, 0xBB)  # the dress's box (2nd colour) on its edge
    assert tuple(pixels[(y0 + y1) // 2, 0]) == (0xE4, 0x57, 0x2E)  # the whole image's box (1st colour)

    # Each arm's top six as a grid of pictures: visual first, then the baseline, captioned id · score.
    top_visual, top_baseline = visual.neighbours[:6], baseline.items[:6]
    assert [g.captions[0] for g in grid] == [f"{n.product_id} · {n.score:.3f}" for n in top_visual] + [
        f"{n.product_id} · {n.score:.2f}" for n in top_baseline
    ]
    for element, n in zip(grid, top_visual + top_baseline, strict=True):
        # below the tile's centre: within the product's shape (photo pixel ~(320, 290)), under "no picture"
        shown = _picture(element, media)[110, 96]
        i = int(n.product_id.removeprefix("p-"))
        expected = (0xD9, 0xD9, 0xD9) if n.product_id == NO_THUMBNAIL else photo(i).getpixel((320, 290))
        assert np.abs(shown - np.asarray(expected)).max() <= 12, (n.product_id, shown, expected)

    at.text_input[0].input(NO_THUMBNAIL).run()  # indexed before thumbnails: the placeholder, boxes still drawn
    assert at.image[0].captions == ["640×480 px placeholder (no thumbnail stored) · 2 item(s)"]
    assert tuple(_picture(at.image[0], media)[5, 180]) == (0xD9, 0xD9, 0xD9)

    at.text_input[0].input("p-12").run()  # the product whose image failed
    assert "HTTP 404 from img.example.com" in texts(at)
    assert f"No {seeded.model_key} vectors for this product yet" in texts(at)
    at.text_input[0].input("nothing-like-this").run()
    assert "matches 'nothing-like-this'" in texts(at)
    assert not at.exception
    assert no_network == []  # every picture came from the database: no URL was fetched, nor its host looked up


def _thumbnail(sessions, external_id: str, tenant: str = TENANT) -> bytes | None:
    from sqlalchemy import select

    from db.models import Product, ProductImage

    with sessions() as session:
        return session.scalar(
            select(ProductImage.thumbnail)
            .join(Product, Product.id == ProductImage.product_id)
            .where(Product.tenant_id == tenant, Product.external_id == external_id)
        )


def test_product_thumbnails_are_the_tenants_own(seeded, settings, sessions):
    from core.contracts import CatalogEvent
    from dashboards import data
    from db.catalog import ImageResult, upsert_product
    from vision.image import make_thumbnail

    # The other tenant has a product of the same id, with a picture of its own.
    other = make_thumbnail(Image.new("RGB", (300, 300), "black"))
    event = CatalogEvent(
        event_id="ev-other-p-03",
        tenant_id=EMPTY_TENANT,
        type="product.upserted",
        product={"id": "p-03", "version": 1, "title": "theirs", "image_urls": ["https://img.example.com/x.jpg"]},
    )
    image = ImageResult("https://img.example.com/x.jpg", 0, "ok", content_hash="x", width=300, height=300)
    image.items, image.thumbnail = [], other
    with sessions() as session, session.begin():
        upsert_product(session, event, [image], model_key=seeded.model_key, dim=seeded.dim)
    ids = ("p-03", "p-04", NO_THUMBNAIL, "p-12", "no-such-product")
    found = data.product_thumbnails(settings.database_url, TENANT, ids)
    # p-12's only image failed and the unknown id has none: left out; p-11's ok image has no thumbnail: None
    assert found == {"p-03": _thumbnail(sessions, "p-03"), "p-04": _thumbnail(sessions, "p-04"), NO_THUMBNAIL: None}
    assert found["p-03"] != other
    assert data.product_thumbnails(settings.database_url, EMPTY_TENANT, ids) == {"p-03": other}
    assert data.product_thumbnails(settings.database_url, TENANT, ()) == {}


def test_pipeline_health(seeded):
    at = page("pipeline")
    assert not at.exception, at.exception
    body = texts(at)
    assert "Products indexed: 12" in body
    assert "Items (vectors): 22" in body
    assert "Images failed: 1" in body
    assert "Dead letters (this tenant): 1" in body
    assert "exposure:" in body and "click:" in body
    reasons = at.dataframe[0].value
    assert list(reasons["reason"]) == ["HTTP 404 from img.example.com"]
    assert charts(at) == 1
    assert "All tenants" not in body  # a tenant admin key sees its own tenant only


def test_pipeline_health_all_tenants_for_operators(seeded):
    at = AppTest.from_file(str(APP_DIR / "pages" / "pipeline.py"), default_timeout=TIMEOUT_S)
    at.session_state["tenant_id"] = TENANT
    at.session_state["allowed_tenants"] = None  # what the operator password grants
    at.run()
    assert not at.exception
    table = at.dataframe[-1].value.set_index("tenant")
    assert table.loc[TENANT, "products"] == 12 and table.loc[EMPTY_TENANT, "products"] == 0
    assert table.loc[TENANT, "dead letters"] == 1


def test_empty_tenant_pages_explain(seeded):
    for name, expected in (
        ("overview", "No experiments yet"),
        ("experiment", "No experiments yet"),
        ("catalog", "is empty"),
        ("pipeline", "Nothing ingested yet"),
    ):
        at = page(name, EMPTY_TENANT)
        assert not at.exception, (name, at.exception)
        assert expected in texts(at), name


def test_operator_password_opens_every_tenant(seeded, monkeypatch):
    from dashboards.auth import PASSWORD_DIGEST_ENV, password_digest

    monkeypatch.setenv(PASSWORD_DIGEST_ENV, password_digest("s3cret pass"))
    at = AppTest.from_file(str(APP_DIR / "app.py"), default_timeout=TIMEOUT_S).run()
    at.text_input[0].input("s3cret pass")
    at.button[0].click().run()
    assert not at.exception
    assert at.session_state["allowed_tenants"] is None
    assert at.sidebar.selectbox[0].options == [TENANT, EMPTY_TENANT]


def test_catalog_deep_link_opens_the_product_and_follows_the_choice(seeded):
    from streamlit.testing.v1 import AppTest

    from tests.dashboards.helpers import APP_DIR, TENANT, TIMEOUT_S

    at = AppTest.from_file(str(APP_DIR / "pages" / "catalog.py"), default_timeout=TIMEOUT_S)
    at.session_state["tenant_id"] = TENANT
    at.query_params["product"] = "p-03"
    at.run()
    assert not at.exception, at.exception
    assert at.text_input[0].value == "p-03" and at.selectbox[0].value == "p-03"
    at.text_input[0].input("p-05").run()
    assert at.selectbox[0].value == "p-05" and at.query_params["product"] in ("p-05", ["p-05"])


def test_power_calculator_does_not_extrapolate_minutes_of_traffic_to_a_day():
    from dashboards.data import default_users_per_day

    assert default_users_per_day(494, 0.00096) == 494.0  # a demo's minutes-old experiment: not 514,583 a day
    assert default_users_per_day(494, None) == 494.0 and default_users_per_day(494, 0) == 494.0
    assert default_users_per_day(900, 3.0) == 300.0 and default_users_per_day(1000, 1.5) == 666.7
