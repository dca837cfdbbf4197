"""`vitrine detector add-class|train|list|activate|eval` on the real Postgres and a real (tiny) YOLO student.

The tenant's catalog: drawn products on white studio backgrounds (circles, triangles, and squares as
another category), stored with thumbnails as the worker stores them; plus a category of busy
"lifestyle" photos whose background cannot be removed.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from core.contracts import CatalogEvent
from db import catalog
from db.catalog import ImageResult, ItemRow
from db.models import Tenant, TrainedModel
from db.tenants import create_tenant
from tests.helpers import settings_env
from vision.image import make_thumbnail
from vitrine.cli import app

pytestmark = pytest.mark.integration
runner = CliRunner()
TINY = ["--epochs", "1", "--imgsz", "64", "--batch", "8", "--train-scenes", "12", "--test-scenes", "10", "--json"]


def photo(kind: str, k: int) -> Image.Image:
    rng = np.random.default_rng(k)
    if kind == "lifestyle":
        return Image.fromarray(rng.integers(0, 255, (160, 160, 3), dtype=np.uint8))
    im = Image.new("RGB", (160, 160), "white")
    d = ImageDraw.Draw(im)
    colour = tuple(int(c) for c in rng.integers(0, 200, 3))
    r = int(rng.integers(35, 60))
    if kind == "circles":
        d.ellipse((80 - r, 80 - r, 80 + r, 80 + r), fill=colour)
    elif kind == "triangles":
        d.polygon([(80, 80 - r), (80 - r, 80 + r), (80 + r, 80 + r)], fill=colour)
    else:
        d.rectangle((80 - r, 80 - r // 2, 80 + r, 80 + r // 2), fill=colour)
    return im


@pytest.fixture
def shop(settings, sessions, monkeypatch):
    for key, value in settings_env(settings).items():
        monkeypatch.setenv(key, value)
    with sessions.begin() as s:
        create_tenant(s, "Acme", "acme")
        create_tenant(s, "Globex", "globex")
        for kind in ("circles", "triangles", "squares", "lifestyle"):
            for k in range(8):
                pid = f"{kind}-{k}"
                event = CatalogEvent.model_validate(
                    {
                        "event_id": pid,
                        "tenant_id": "acme",
                        "type": "product.upserted",
                        "product": {"id": pid, "version": 1, "category": kind, "image_urls": [f"https://x.test/{pid}"]},
                    }
                )
                item = ItemRow("whole", (0, 0, 8, 8), "image", 1.0, np.ones(4, np.float32))
                image = ImageResult(
                    f"https://x.test/{pid}", 0, "ok", content_hash=pid, items=[item],
                    thumbnail=make_thumbnail(photo(kind, k)),
                )  # fmt: skip
                catalog.upsert_product(s, event, [image], model_key="m@1", dim=4)
        event = CatalogEvent.model_validate(
            {
                "event_id": "broken",
                "tenant_id": "acme",
                "type": "product.upserted",
                "product": {"id": "broken", "version": 1, "category": "circles", "image_urls": ["https://x.test/b"]},
            }
        )
        item = ItemRow("whole", (0, 0, 8, 8), "image", 1.0, np.ones(4, np.float32))
        image = ImageResult("https://x.test/b", 0, "ok", content_hash="b", items=[item], thumbnail=b"not a webp")
        catalog.upsert_product(s, event, [image], model_key="m@1", dim=4)
    return settings


def cli(*args):
    return runner.invoke(app, ["detector", *args])


def test_classes_are_taught_one_at_a_time_and_bad_requests_leave_nothing(shop):
    classes = shop.data_dir / "detectors" / "acme" / "classes"
    added = cli("add-class", "ball", "--tenant", "acme", "--from-category", "circles", "--json")
    assert added.exit_code == 0, added.output
    card = json.loads(added.stdout)["card"]
    assert card["names"] == ["ball"] and card["teacher"] == "catalog" and card["usable_products"] == 8
    assert card["counts"]["train"]["images"] + card["counts"]["val"]["images"] == 8
    assert "1 stored thumbnails of 'circles' do not decode" in added.stderr  # skipped, said, no traceback

    again = cli("add-class", "Ball", "--tenant", "acme", "--from-category", "triangles")
    assert again.exit_code == 1 and "already present" in again.output
    empty = cli("add-class", "hat", "--tenant", "acme", "--from-category", "hats")
    assert empty.exit_code == 1 and "0 products" in empty.output
    busy = cli("add-class", "scene", "--tenant", "acme", "--from-category", "lifestyle")
    assert busy.exit_code == 1 and "8 no_plain_background" in busy.output
    offline = cli("add-class", "cone", "--tenant", "acme", "--from-category", "triangles", "--teacher", "owlvit")
    assert offline.exit_code == 1 and "owlvit" in offline.output.lower()
    unknown = cli("add-class", "cone", "--tenant", "nobody", "--from-category", "triangles")
    assert unknown.exit_code == 1 and "no tenant" in unknown.output
    assert sorted(p.name for p in classes.iterdir()) == ["ball"]  # nothing half-registered


def test_train_registers_a_student_that_activates_evaluates_and_keeps_its_classes_when_one_is_added(shop, sessions):
    assert cli("add-class", "ball", "--tenant", "acme", "--from-category", "circles").exit_code == 0
    assert cli("add-class", "cone", "--tenant", "acme", "--from-category", "triangles").exit_code == 0
    trained = cli("train", "--tenant", "acme", *TINY)
    assert trained.exit_code == 0, trained.output
    first = json.loads(trained.stdout)
    key = first["key"]
    assert key.startswith("detector-yolo11n@") and first["card"]["classes"] == ["ball", "cone"]
    held = first["card"]["heldout"]
    assert set(held["per_class"]) == {"ball", "cone"} and 0 <= held["map50"] <= 1
    with sessions() as s:
        row = s.query(TrainedModel).filter_by(tenant_id="acme", model_key=key).one()
        assert row.method == "detector" and row.status == "ready" and row.artefact_path.endswith("student.pt")

    listed = json.loads(cli("list", "--tenant", "acme", "--json").stdout)
    assert [c["label"] for c in listed["classes"]] == ["ball", "cone"]
    assert [(d["key"], d["active"]) for d in listed["detectors"]] == [(key, False)]
    assert cli("activate", key, "--tenant", "globex").exit_code == 1  # not globex's
    assert cli("activate", key, "--tenant", "acme").exit_code == 0
    with sessions() as s:
        assert s.get(Tenant, "acme").active_detector == key
    # Activation marks the tenant's indexed photos for the worker to detect again.
    assert json.loads(cli("list", "--tenant", "acme", "--json").stdout)["redetect_pending"] == {"acme": 33}
    evaluated = cli("eval", key, "--tenant", "acme", "--json")
    assert evaluated.exit_code == 0, evaluated.output
    assert set(json.loads(evaluated.stdout)["card"]["heldout"]["per_class"]) == {
        "ball",
        "cone",
    }

    # A third class: the student is fine-tuned from the first, old classes first, ids unchanged.
    assert cli("add-class", "brick", "--tenant", "acme", "--from-category", "squares").exit_code == 0
    again = cli("train", "--tenant", "acme", *TINY)
    assert again.exit_code == 0, again.output
    second = json.loads(again.stdout)
    assert second["card"]["classes"] == ["ball", "cone", "brick"]
    assert second["card"]["student"]["config"]["base"].endswith(f"detectors/acme/{key}/student.pt")
    table = cli("eval", second["key"], "--tenant", "acme")
    assert table.exit_code == 0 and "yolo+head" in table.stdout and "served:" in table.stdout
    multi = second["card"]["heldout_labels_per_box"]
    assert f"mAP50 {multi['yolo+head']['map50']:.3f}; serving names a box once" in table.stdout
