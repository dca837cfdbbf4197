"""The model parts of the pipeline and catalog pages under Streamlit's AppTest, on a real Postgres: each
deployment's state (re-embed progress, ready with its index, the failure reason), the active model and its
rollback target, and each servable model's neighbours side by side, for one tenant only."""

from __future__ import annotations

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.contracts import CatalogEvent
from db.catalog import DerivedModel, ImageResult, ItemRow, upsert_product
from db.models import ModelDeployment, Tenant
from db.tenants import create_tenant
from tests.dashboards.helpers import TIMEOUT_S, page, texts
from tests.dashboards.seed import APP_DIR
from tests.helpers import settings_env

pytestmark = pytest.mark.integration

SHOP, OTHER = "model-shop", "other-shop"
READY, EMBEDDING, FAILED = "trained-a", "trained-b", "trained-c"
OTHER_ONLY = "other-secret"  # a ready model of the other tenant: never shown to SHOP
FAILED_REASON = "model 'trained-c' cannot be read: head.npz is missing"
OTHER_REASON = "the other tenant's own failure"
# Trained 4-d vectors that group the products across the embedder's clusters ({1,2,3} and {4,5,6} there):
# under the trained model m-1's nearest are m-4 and m-5, under the embedder m-2 and m-3.
TRAINED = {
    1: [1.0, 0.0, 0.0, 0.0],
    4: [0.95, 0.3, 0.0, 0.0],
    5: [0.9, 0.0, 0.4, 0.0],
    2: [0.0, 0.0, 1.0, 0.2],
    3: [0.0, 0.1, 1.0, 0.0],
    6: [0.1, 0.0, 0.9, 0.4],
}


def _fixed(vector: list[float]):
    """A head transform that maps every backbone vector of one product to `vector` (unit length)."""
    v = np.asarray(vector, dtype=np.float32) / np.linalg.norm(vector)
    return lambda backbone: np.tile(v, (len(backbone), 1))


def _product(session, tenant: str, pid: str, backbone: np.ndarray, derived: list[DerivedModel], key: str, dim: int):
    url = f"https://img.example.com/{tenant}/{pid}.jpg"
    event = CatalogEvent(
        event_id=f"ev-{tenant}-{pid}",
        tenant_id=tenant,
        type="product.upserted",
        product={"id": pid, "version": 1, "title": f"bag {pid}", "category": "bags", "price": 20, "image_urls": [url]},
    )
    item = ItemRow("whole", (0, 0, 640, 480), "whole image", 1.0, backbone)
    image = ImageResult(url, 0, "ok", content_hash=f"h-{tenant}-{pid}", width=640, height=480, items=[item])
    upsert_product(session, event, [image], model_key=key, dim=dim, derived={tenant: derived})


def _deployment(tenant: str, key: str, status: str, **fields) -> ModelDeployment:
    defaults = {"phase": "done", "items_done": 6, "items_total": 6, "index_kind": "halfvec", "reason": None}
    return ModelDeployment(
        tenant_id=tenant,
        model_key=key,
        source_key="efficientnet-lite0@imagenet1k-0.1.0",
        dim=4,
        artefact_path=f"/models/{key}.vtm",
        status=status,
        **(defaults | fields),
    )


@pytest.fixture
def shop(settings, sessions, monkeypatch) -> tuple[str, int]:
    """SHOP: six products with the embedder's vectors and a ready trained model's (active; the embedder is the
    rollback target), one re-embedding halfway, one failed; OTHER: its own models, vectors equal to SHOP's."""
    import streamlit as st

    from dashboards import data

    for k, v in settings_env(settings).items():
        monkeypatch.setenv(k, v)
    st.cache_data.clear()
    key, dim = data.embedder_identity(settings)
    rng = np.random.default_rng(11)
    centres = [rng.normal(size=dim), rng.normal(size=dim)]

    def backbone(i: int) -> np.ndarray:
        v = centres[i > 3] + 0.3 * rng.normal(size=dim)
        return (v / np.linalg.norm(v)).astype(np.float32)

    with sessions() as session, session.begin():
        create_tenant(session, "Model shop", SHOP)
        create_tenant(session, "Other shop", OTHER)
        for i in range(1, 7):
            heads = [DerivedModel(READY, 4, _fixed(TRAINED[i]))]
            if i <= 3:  # the re-embed has written half the catalog: never served
                heads.append(DerivedModel(EMBEDDING, 4, _fixed(TRAINED[i])))
            _product(session, SHOP, f"m-{i}", backbone(i), heads, key, dim)
        for i in (1, 2):  # the nearest possible vectors to m-1 under every model, in the other tenant
            heads = [DerivedModel(READY, 4, _fixed(TRAINED[1])), DerivedModel(OTHER_ONLY, 4, _fixed(TRAINED[1]))]
            _product(session, OTHER, f"o-{i}", backbone(1), heads, key, dim)
        session.add_all(
            [
                _deployment(SHOP, READY, "ready"),
                _deployment(SHOP, EMBEDDING, "embedding", phase="scan", items_done=3),
                _deployment(SHOP, FAILED, "failed", phase="scan", items_done=0, reason=FAILED_REASON),
                _deployment(OTHER, READY, "failed", phase="scan", reason=OTHER_REASON),
                _deployment(OTHER, OTHER_ONLY, "ready", index_kind="binary"),
            ]
        )
        session.flush()
        tenant = session.get(Tenant, SHOP)
        tenant.active_model, tenant.previous_model = READY, key
    yield key, dim
    # The app's pooled connections would otherwise keep Postgres from shutting down at the end of the run.
    data.engine(settings.database_url).dispose()
    data.engine.clear()


def test_pipeline_page_shows_each_model(shop):
    embedder_key, _ = shop
    at = page("pipeline", SHOP)
    assert not at.exception, at.exception
    body = texts(at)
    assert f"serves **`{READY}`** (a trained model) · rollback target **`{embedder_key}`**" in body
    [bar] = at.progress  # only the deployment still re-embedding has a bar
    # db.deployments.progress: the scan is 90 % of the work, 3 of 6 items read -> 0.45
    assert bar.value == 45
    assert bar.text == f"`{EMBEDDING}`: re-embedding, scan 45% (3/6 items read)"
    assert f"`{READY}` · **active**: ready, halfvec index" in body
    assert f"`{embedder_key}`: the deployed embedder, always ready, halfvec index" in body
    [failed] = [e.value for e in at.error if FAILED in e.value]
    assert f"failed: {FAILED_REASON}" in failed
    assert OTHER_ONLY not in body and OTHER_REASON not in body  # the other tenant's models stay its own
    assert "not ready to serve" not in body


def test_pipeline_page_warns_when_the_active_model_cannot_serve(shop, sessions):
    with sessions() as session, session.begin():
        session.get(Tenant, SHOP).active_model = EMBEDDING
    at = page("pipeline", SHOP)
    assert not at.exception, at.exception
    [warning] = [w.value for w in at.warning if "not ready" in w.value]
    assert f"`{EMBEDDING}` is not ready to serve (re-embedding, scan 45% (3/6 items read))" in warning
    assert "answers with the baseline" in warning


def test_catalog_explorer_shows_each_servable_model(shop, sessions):
    from db.vector_queries import similar_products

    embedder_key, dim = shop
    at = AppTest.from_file(str(APP_DIR / "pages" / "catalog.py"), default_timeout=TIMEOUT_S)
    at.session_state["tenant_id"] = SHOP
    at.run()
    at.text_input[0].input("m-1").run()
    assert not at.exception, at.exception
    assert at.selectbox[0].value == "m-1"
    # the product's items, then one list per servable model (embedder first), then the baseline's
    items, embedder_frame, trained_frame, baseline_frame = (d.value for d in at.dataframe)
    # one detected item, stored once per model: listed (and drawn) once, with the models that have its vector
    assert list(items["label"]) == ["whole image"]
    assert list(items["vectors of"]) == [f"{embedder_key}, {READY}, {EMBEDDING}"]
    headers = [m.value for m in at.markdown if m.value.startswith("**")]
    assert headers[0].startswith(f"**`{embedder_key}`** · pretrained embedder")
    assert headers[1].startswith(f"**`{READY}`** · **active** (`visual`) · trained · halfvec")
    assert headers[2].startswith("**baseline**")
    with sessions() as session, session.begin():
        expected = {
            model: similar_products(session, tenant_id=SHOP, external_id="m-1", model_key=model, dim=d, limit=10)
            for model, d in ((embedder_key, dim), (READY, 4))
        }
    for frame, model in ((embedder_frame, embedder_key), (trained_frame, READY)):
        assert list(frame["product_id"]) == [n.product_id for n in expected[model].neighbours]
        assert list(frame["similarity"]) == [n.score for n in expected[model].neighbours]
    # the two models disagree, as the seeded vectors say: the page shows each one's own list
    assert set(embedder_frame["product_id"][:2]) == {"m-2", "m-3"}
    assert set(trained_frame["product_id"][:2]) == {"m-4", "m-5"}
    assert list(trained_frame["similarity"][:2]) == pytest.approx([0.9535, 0.9138], abs=1e-3)  # cosines of TRAINED
    assert len(baseline_frame) == 5
    body = texts(at)
    for hidden in (EMBEDDING, FAILED, OTHER_ONLY, "o-1", "o-2"):  # not ready, or another tenant's: no column
        assert hidden not in body
        assert all(hidden not in set(d.value.get("product_id", [])) for d in at.dataframe)
