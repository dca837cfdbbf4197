"""`vitrine demo`: the whole path on real parts, on one machine.

embedded broker + Postgres -> api and worker processes -> signed webhooks for sample products
-> worker fetches, embeds (EfficientNet-Lite0, offline) and indexes them -> recommendations.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import ExitStack

import typer
from sqlalchemy import func, select

from core.settings import Settings
from db.models import Product
from vitrine.client import CatalogClient, StorefrontClient
from vitrine.image_server import ImageServer
from vitrine.local_system import start_local_system
from vitrine.sample_catalog import sample_event, write_sample_images

log = logging.getLogger(__name__)
DEMO_TENANT = "demo"


def run_demo(settings: Settings, *, n_products: int = 8, serve: bool = False, index_timeout_s: float = 300) -> None:
    """Run the demo and print what happened; raises RuntimeError with a clear message on failure."""
    t0 = time.monotonic()
    with ExitStack() as stack:
        samples = write_sample_images(settings.data_dir / "demo" / "images")[:n_products]
        images = stack.enter_context(ImageServer(settings.data_dir / "demo" / "images"))
        system = start_local_system(settings, stack, name="demo")
        typer.echo(
            f"{'started the embedded stack' if system.started_stack else 'using the running stack'}: "
            f"kafka {system.settings.kafka_bootstrap}, postgres under {settings.data_dir.resolve()}"
        )
        creds = system.fresh_tenant(DEMO_TENANT, "Demo retailer")
        base, worker, logs = system.base_url, system.worker, system.logs
        typer.echo(f"api on {base}, worker running (logs under {logs})")

        catalog = CatalogClient(base, creds.tenant_id, creds.webhook_secret)
        stack.callback(catalog.close)
        resp = catalog.send([sample_event(s, creds.tenant_id, images.base_url) for s in samples])
        if resp.status_code != 202:
            raise RuntimeError(f"webhook answered {resp.status_code}: {resp.text}")
        typer.echo(f"posted {len(samples)} signed product events -> 202 accepted")

        _wait_indexed(system.sessions, creds.tenant_id, len(samples), worker, index_timeout_s, logs)
        typer.echo(f"worker indexed {len(samples)} products in {time.monotonic() - t0:.1f}s since start")

        shop = StorefrontClient(base, creds.storefront_key)
        stack.callback(shop.close)
        typer.echo(f"\nvisually similar products (visual arm, embedder {settings.embedder}, pgvector HNSW):")
        for s in samples:
            body = shop.recommendations(s.id, user_id="demo-shopper", limit=3).json()
            shown = ", ".join(f"{it['product_id']} ({it['score']:.2f})" for it in body["items"]) or "-"
            typer.echo(f"  {s.id:<16} -> {shown}")
        typer.echo(f"\none response in full:\n{json.dumps(body, indent=2)}")
        if serve:
            typer.echo(f"\nserving: api {base}, storefront key {creds.storefront_key}; Ctrl-C stops")
            try:
                worker.wait()
            except KeyboardInterrupt:
                pass
        typer.echo("\nstopping api, worker and the embedded stack...")
    typer.echo(f"demo done in {time.monotonic() - t0:.1f}s")


def _wait_indexed(sessions, tenant_id: str, n: int, worker, timeout_s: float, logs) -> None:
    deadline = time.monotonic() + timeout_s
    done = 0
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise RuntimeError(f"worker exited with {worker.returncode}; see {logs / 'worker.log'}")
        with sessions() as s:
            done = s.scalar(
                select(func.count())
                .select_from(Product)
                .where(Product.tenant_id == tenant_id, Product.indexed_at.is_not(None))
            )
        if done >= n:
            return
        time.sleep(0.5)
    raise RuntimeError(f"only {done}/{n} products indexed after {timeout_s:.0f}s; see {logs / 'worker.log'}")
