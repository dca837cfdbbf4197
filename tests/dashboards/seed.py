"""Known data for the dashboard tests: one tenant, a running A/B test with a known lift, an empty
experiment, a small catalog with vectors, stored thumbnails and a failed image, one dead letter."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from sqlalchemy import insert, text

from core.contracts import CatalogEvent, DeadLetter
from db.catalog import ImageResult, ItemRow, upsert_product
from db.experiments import create_experiment
from db.models import InteractionEvent
from db.tenants import create_tenant
from vision.image import make_thumbnail

TENANT = "acme"
EMPTY_TENANT = "empty-shop"
EXPERIMENT = "visual-vs-baseline"
EMPTY_EXPERIMENT = "next-test"
USERS = 3000  # half per arm
CLICK_P = {"baseline": 0.10, "visual": 0.13}  # per exposure: a true lift of 30 % on CTR
DAYS = 5
NO_THUMBNAIL = "p-11"  # indexed before thumbnails were stored (migration 0012): drawn as a placeholder
ITEM_BOX = (100, 80, 400, 420)  # the detected item of every seeded photo, in its 640 x 480 pixels
ROOT = Path(__file__).resolve().parents[2]
APP_DIR = ROOT / "dashboards"


@dataclass(frozen=True)
class Seeded:
    admin_key: str
    empty_admin_key: str
    model_key: str
    dim: int


def _events(start: datetime) -> list[dict]:
    """Exposures (1-3 per user, on one of DAYS days) and request-attributed clicks; fixed seed."""
    rng = random.Random(7)
    rows, n = [], 0
    for u in range(USERS):
        arm = "baseline" if u % 2 == 0 else "visual"
        day = start + timedelta(days=rng.randrange(DAYS), hours=1 + rng.random() * 20)
        for r in range(rng.randint(1, 3)):
            n += 1
            at = day + timedelta(minutes=5 * r)
            request = f"req-{u}-{r}"
            rows.append(
                {
                    "tenant_id": TENANT,
                    "event_id": f"e{n}",
                    "type": "exposure",
                    "user_id": f"u{u}",
                    "request_id": request,
                    "product_id": "p-01",
                    "experiment": EXPERIMENT,
                    "arm": arm,
                    "value": None,
                    "payload": {},
                    "occurred_at": at,
                }
            )
            if rng.random() < CLICK_P[arm]:
                n += 1
                rows.append(
                    {
                        "tenant_id": TENANT,
                        "event_id": f"e{n}",
                        "type": "click",
                        "user_id": f"u{u}",
                        "request_id": request,
                        "product_id": "p-02",
                        "experiment": EXPERIMENT,
                        "arm": arm,
                        "value": None,
                        "payload": {},
                        "occurred_at": at + timedelta(seconds=30),
                    }
                )
    return rows


def photo(i: int) -> Image.Image:
    """Product i's 640 x 480 photo: a shape of its own colour on white, filling ITEM_BOX."""
    im = Image.new("RGB", (640, 480), "white")
    colour = (40 + 17 * i % 200, 60 + 53 * i % 180, 200 - 13 * i % 150)
    draw = ImageDraw.Draw(im)
    if i <= 6:  # a dress
        x0, y0, x1, y1 = ITEM_BOX
        draw.polygon([(x0 + 90, y0), (x1 - 90, y0), (x1, y1), (x0, y1)], fill=colour)
    else:  # a shoe
        draw.ellipse(ITEM_BOX, fill=colour)
    return im


def _catalog(session, model_key: str, dim: int) -> None:
    """Twelve products in two categories with clustered vectors and thumbnails; p-12's image failed to download,
    p-11's has no thumbnail."""
    rng = np.random.default_rng(3)
    centres = {"dresses": rng.normal(size=dim), "shoes": rng.normal(size=dim)}
    for i in range(1, 13):
        category = "dresses" if i <= 6 else "shoes"
        label = {"dresses": "dress", "shoes": "shoe"}[category]
        pid = f"p-{i:02d}"
        url = f"https://img.example.com/{pid}.jpg"
        event = CatalogEvent(
            event_id=f"ev-{pid}",
            tenant_id=TENANT,
            type="product.upserted",
            product={
                "id": pid,
                "version": 1,
                "title": f"{label} number {i}",
                "category": category,
                "price": 10 + i,
                "image_urls": [url],
            },
        )
        if i == 12:
            images = [ImageResult(url, 0, "failed", reason="HTTP 404 from img.example.com")]
        else:

            def vec(category: str = category) -> np.ndarray:
                v = centres[category] + 0.3 * rng.normal(size=dim)
                return (v / np.linalg.norm(v)).astype(np.float32)

            items = [
                ItemRow("whole", (0, 0, 640, 480), "whole image", 1.0, vec()),
                ItemRow("item", ITEM_BOX, label, 0.87, vec()),
            ]
            thumbnail = None if pid == NO_THUMBNAIL else make_thumbnail(photo(i))
            images = [
                ImageResult(url, 0, "ok", content_hash=f"h{i}", width=640, height=480, items=items, thumbnail=thumbnail)
            ]
        upsert_product(session, event, images, model_key=model_key, dim=dim)


def seed(settings, sessions) -> Seeded:
    """Write the known data set into the test's database and dead-letter topic."""
    from dashboards.data import embedder_identity
    from streams.sync_producer import SyncProducer
    from streams.topics import DEAD_LETTER

    model_key, dim = embedder_identity(settings)
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=DAYS)
    with sessions() as session, session.begin():
        creds = create_tenant(session, "Acme", TENANT)
        empty = create_tenant(session, "Empty shop", EMPTY_TENANT)
        exp = create_experiment(
            session,
            TENANT,
            EXPERIMENT,
            primary_metric="ctr",
            planned_sample_size=3000,
            arms=[{"name": "baseline", "weight": 0.5}, {"name": "visual", "weight": 0.5}],
        )
        exp.status, exp.started_at = "running", start
        create_experiment(
            session,
            TENANT,
            EMPTY_EXPERIMENT,
            placement="search",
            arms=[{"name": "baseline", "weight": 0.5}, {"name": "visual", "weight": 0.5}],
        )
        session.execute(insert(InteractionEvent), _events(start))
        _catalog(session, model_key, dim)
    with sessions() as session, session.begin():
        # Fresh tables have no planner statistics (autovacuum comes later): without them the
        # loader's joins get nested-loop plans that take minutes instead of milliseconds.
        session.execute(text("ANALYZE interaction_events; ANALYZE products; ANALYZE items"))
    dead = DeadLetter(
        topic=settings.topic("catalog.product-events"),
        key=f"{TENANT}:p-99",
        payload='{"tenant_id": "acme", "event_id": "ev-p-99"}',
        error="embedder crashed",
        attempts=3,
    )
    with SyncProducer(settings.kafka_bootstrap, timeout_s=10) as producer:
        producer.send(settings.topic(DEAD_LETTER.name), dead.key, dead.model_dump_json().encode())
        producer.flush()
    return Seeded(creds.admin_key, empty.admin_key, model_key, dim)
