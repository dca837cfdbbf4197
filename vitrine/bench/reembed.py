"""`vitrine bench reembed`: re-embed a synthetic tenant of N stored vectors with a head model, in a Postgres of its own.

Times exactly what `vitrine model reembed` runs (db.reembed.reembed_from_vectors with the artefact's numpy head):
read the stored 1280-d vectors, apply the head, write the 128-d items, build their HNSW index. The stored
vectors are random unit vectors and the head's weights are seeded random: this measures speed, not quality.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from sqlalchemy import text

from core.machine import machine_info
from db.embedded import EmbeddedPostgres
from db.migrate import upgrade
from db.reembed import reembed_from_vectors
from db.session import create_db_engine, session_factory
from db.tenants import create_tenant
from vision.trained import TrainedEmbedder, write_artefact

BACKBONE_KEY = "efficientnet-lite0@imagenet1k-0.1.0"


def run_reembed_bench(items: int, *, data_dir: Path, seed: int = 0) -> dict:
    """Create the tenant, time one re-embedding; one JSON-able object with the figures, machine and settings."""
    with tempfile.TemporaryDirectory(prefix="vitrine-reembed-") as tmp, EmbeddedPostgres(Path(tmp) / "pg") as pg:
        upgrade(pg.url)
        engine = create_db_engine(pg.url)
        try:
            with session_factory(engine).begin() as s:
                create_tenant(s, "Bench", "bench")
                _synthetic_catalog(s, items, seed)
            trained = TrainedEmbedder(artefact=_head_artefact(Path(tmp), seed), cache_dir=data_dir / "models")
            trained.load()
            started = time.perf_counter()
            with session_factory(engine).begin() as s:
                written = reembed_from_vectors(
                    s, "bench", source_key=BACKBONE_KEY, target_key=trained.model_key, dim=trained.dim,
                    transform=trained.embed_features,
                )  # fmt: skip
            seconds = time.perf_counter() - started
        finally:
            engine.dispose()
    return {
        "benchmark": "reembed",
        "settings": {"items": items, "source": f"{BACKBONE_KEY} (1280-d, random unit vectors)", "seed": seed,
                     "head": "1280 -> 1024 -> 128 (numpy)", "index": "HNSW halfvec(128), m 16, ef_construction 64"},
        "machine": machine_info(),
        "items": written,
        "seconds": round(seconds, 2),
        "items_per_s": round(written / seconds, 1),
        "seconds_per_10k": round(seconds / written * 10_000, 2),
    }  # fmt: skip


def format_report(r: dict) -> str:
    """The figures as a few readable lines."""
    m = r["machine"]
    return (
        f"re-embed from stored vectors: {r['items']:,} items in {r['seconds']} s ({r['items_per_s']:,} items/s, "
        f"{r['seconds_per_10k']} s per 10k), read + head + write + HNSW index\n"
        f"settings: {r['settings']}\nmachine: {m['cpu']}, {m['usable_cpus']} usable cpus, load {m['load_average_1m']}"
    )


def _synthetic_catalog(session, items: int, seed: int) -> None:
    session.execute(text("SELECT setseed(:s)"), {"s": (seed % 1000) / 1000})
    session.execute(
        text("""INSERT INTO products (tenant_id, external_id, version, title, category, in_stock, attributes, deleted)
                SELECT 'bench', 'p' || g, 1, 'p' || g, 'c' || (g % 20), true, '{}', false
                FROM generate_series(1, :n) g"""),
        {"n": items},
    )
    session.execute(
        text("""INSERT INTO product_images (tenant_id, product_id, url, position, status, updated_at)
                SELECT 'bench', id, 'https://x.test/' || external_id, 0, 'ok', now()
                FROM products WHERE tenant_id = 'bench'""")
    )
    session.execute(
        text("""INSERT INTO items (tenant_id, product_id, image_id, kind, box, label, score, model, dim, embedding,
                                   in_stock, category)
                SELECT 'bench', i.product_id, i.id, 'whole', ARRAY[0, 0, 1, 1]::float8[], 'product', 1.0, :k, 1280,
                       (SELECT l2_normalize(array_agg(random() - 0.5)::vector) FROM generate_series(1, 1280)
                        WHERE i.id > 0), true, 'c'
                FROM product_images i WHERE i.tenant_id = 'bench'"""),
        {"k": BACKBONE_KEY},
    )


def _head_artefact(directory: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    head = {
        "w1": (rng.normal(size=(1280, 1024)) / 36).astype(np.float32),
        "b1": np.zeros(1024, np.float32),
        "w2": (rng.normal(size=(1024, 128)) / 32).astype(np.float32),
        "b2": np.zeros(128, np.float32),
    }
    card = {
        "name": "bench-head",
        "method": "supervised",
        "dim": 128,
        "input": {"size": 224, "preprocessing": "imagenet"},
        "backbone": {"name": "efficientnet-lite0", "model_key": BACKBONE_KEY},
    }
    return write_artefact(directory / "models", card, head=head)
