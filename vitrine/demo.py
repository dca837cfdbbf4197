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

from db.models import Product, Tenant
from db.session import create_db_engine, session_factory
from db.tenants import create_tenant
from streams.embedded_broker import free_port
from vitrine import procs
from vitrine.client import CatalogClient, StorefrontClient
from vitrine.image_server import ImageServer
from vitrine.sample_catalog import sample_event, write_sample_images
from vitrine.settings import Settings, StackNotRunning
from vitrine.stack import EmbeddedStack

log = logging.getLogger(__name__)
DEMO_TENANT = "demo"


def run_demo(settings: Settings, *, n_products: int = 8, serve: bool = False, index_timeout_s: float = 300) -> None:
    """Run the demo and print what happened; raises RuntimeError with a clear message on failure."""
    t0 = time.monotonic()
    with ExitStack() as stack:
        try:
            resolved = settings.resolved()  # a `vitrine up` is already running: use it
            typer.echo(f"using the running stack: kafka {resolved.kafka_bootstrap}")
        except StackNotRunning:
            embedded = EmbeddedStack(settings)
            resolved = embedded.start()
            stack.callback(embedded.stop)
            typer.echo(f"started the embedded stack: kafka {resolved.kafka_bootstrap}, postgres (socket) "
                       f"under {settings.data_dir.resolve()}")

        samples = write_sample_images(settings.data_dir / "demo" / "images")[:n_products]
        images = stack.enter_context(ImageServer(settings.data_dir / "demo" / "images"))
        engine = create_db_engine(resolved.database_url)
        stack.callback(engine.dispose)
        creds = _fresh_demo_tenant(session_factory(engine))

        api_port = free_port()
        env = {
            "VITRINE_KAFKA_BOOTSTRAP": resolved.kafka_bootstrap, "VITRINE_DATABASE_URL": resolved.database_url,
            "VITRINE_DATA_DIR": str(settings.data_dir.resolve()), "VITRINE_API_PORT": str(api_port),
            "VITRINE_WORKER_WEB_PORT": str(free_port()),
            "VITRINE_FETCH_ALLOW_HOSTS": "127.0.0.1",  # the sample images are served from here
        }
        logs = settings.data_dir / "demo" / "logs"
        worker = procs.spawn(["worker"], env, logs / "worker.log")
        stack.callback(procs.stop, worker)
        api = procs.spawn(["api"], env, logs / "api.log")
        stack.callback(procs.stop, api)
        base = f"http://127.0.0.1:{api_port}"
        procs.wait_http(f"{base}/healthz", api, timeout_s=90, log_path=logs / "api.log")
        typer.echo(f"api on {base}, worker running (logs under {logs})")

        catalog = CatalogClient(base, creds.tenant_id, creds.webhook_secret)
        stack.callback(catalog.close)
        resp = catalog.send([sample_event(s, creds.tenant_id, images.base_url) for s in samples])
        if resp.status_code != 202:
            raise RuntimeError(f"webhook answered {resp.status_code}: {resp.text}")
        typer.echo(f"posted {len(samples)} signed product events -> 202 accepted")

        _wait_indexed(session_factory(engine), creds.tenant_id, len(samples), worker, index_timeout_s, logs)
        typer.echo(f"worker indexed {len(samples)} products in {time.monotonic() - t0:.1f}s since start")

        shop = StorefrontClient(base, creds.storefront_key)
        stack.callback(shop.close)
        typer.echo("\nvisually similar products (visual arm, EfficientNet-Lite0 + pgvector HNSW):")
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


def _fresh_demo_tenant(sessions):
    """Recreate the demo tenant so every run starts from an empty catalog with known keys."""
    with sessions.begin() as s:
        old = s.get(Tenant, DEMO_TENANT)
        if old is not None:
            s.delete(old)
            s.flush()
        return create_tenant(s, "Demo retailer", DEMO_TENANT)


def _wait_indexed(sessions, tenant_id: str, n: int, worker, timeout_s: float, logs) -> None:
    deadline = time.monotonic() + timeout_s
    done = 0
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise RuntimeError(f"worker exited with {worker.returncode}; see {logs / 'worker.log'}")
        with sessions() as s:
            done = s.scalar(select(func.count()).select_from(Product).where(
                Product.tenant_id == tenant_id, Product.indexed_at.is_not(None)))
        if done >= n:
            return
        time.sleep(0.5)
    raise RuntimeError(f"only {done}/{n} products indexed after {timeout_s:.0f}s; see {logs / 'worker.log'}")
