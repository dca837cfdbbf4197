"""Session fixtures: one real Tansu broker and one real Postgres+pgvector for the whole run.

Isolation between tests: every test that asks for `database_url` gets its own database, copied
from a migrated template (~0.1 s); every test that asks for `settings` gets its own topic prefix
and faust app id, so consumer groups and topics never collide.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

from core.settings import Settings
from db import vector_queries
from db.embedded import EmbeddedPostgres
from db.migrate import upgrade
from db.session import create_db_engine, session_factory
from streams.embedded_broker import ManagedBroker, free_port
from streams.topics import ensure_topics
from vitrine.image_server import ImageServer
from vitrine.sample_catalog import write_sample_images

TEMPLATE_DB = "vitrine_template"
_db_counter = itertools.count()


@pytest.fixture(autouse=True)
def _fresh_index_entries():
    """Each test reads its own database's index sizes: the per-process cache is keyed by index name, and the
    tests' databases hold indexes of the same names (db/vector_queries.py index_entries)."""
    vector_queries._ENTRIES.clear()


@pytest.fixture(scope="session")
def state_dir() -> Path:
    """Project-owned state for the run, removed afterwards.

    Not under pytest's tmp dir: pgserver (as root) chmods the data dir's parents so its
    `pgserver` user can reach them, and pytest resets /tmp/pytest-of-<user> to 0700 whenever
    another pytest starts, which would pull the directory from under a running initdb.
    """
    root = Path(__file__).resolve().parents[1] / ".vitrine" / "test-runs"
    root.mkdir(parents=True, exist_ok=True)
    d = Path(tempfile.mkdtemp(prefix=f"run-{os.getpid()}-", dir=root))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def models_dir(state_dir) -> Path:
    """Shared model cache (exported ONNX graphs) so each test does not export again."""
    d = state_dir / "models"
    d.mkdir()
    return d


@pytest.fixture(scope="session")
def postgres(state_dir):
    pg = EmbeddedPostgres(state_dir / "pg").start()
    template_url = pg.create_database(TEMPLATE_DB)
    upgrade(template_url)
    yield pg
    pg.stop()


@pytest.fixture(scope="session")
def broker(state_dir):
    """The session's Tansu: memory storage (fast), or VITRINE_TEST_BROKER=durable for the S3-backed one.

    The durable path of `vitrine up` is always tested where it matters, by restarting it
    (tests/vitrine/test_durable_stack.py); the switch runs every other test on it too.
    """
    storage = os.environ.get("VITRINE_TEST_BROKER", "memory")
    b = ManagedBroker(state_dir / "broker", storage=storage).start()
    yield b
    b.stop()


@pytest.fixture
def database_url(postgres) -> str:
    """A fresh, migrated, empty database for this test."""
    return postgres.create_database(f"t{os.getpid()}_{next(_db_counter)}", template=TEMPLATE_DB)


@pytest.fixture
def db_engine(database_url):
    engine = create_db_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(db_engine):
    return session_factory(db_engine)


@pytest.fixture
def settings(broker, database_url, tmp_path, models_dir) -> Settings:
    """Resolved settings on the real broker and a fresh database, with topics of their own."""
    tag = uuid.uuid4().hex[:8]
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "models").symlink_to(models_dir)
    s = Settings(
        data_dir=data_dir,
        kafka_bootstrap=broker.bootstrap,
        database_url=database_url,
        topic_prefix=f"t{tag}.",
        app_id=f"vitrine-test-{tag}",
        topic_partitions=2,
        worker_web_port=free_port(),
        fetch_allow_hosts="127.0.0.1",
        fetch_timeout_s=3.0,
    )
    ensure_topics(s)
    return s


@pytest.fixture(scope="session")
def sample_images(state_dir):
    """Real photos (crops of images shipped by ultralytics/matplotlib) and their catalog entries."""
    root = state_dir / "images"
    return root, write_sample_images(root)


@pytest.fixture(scope="session")
def image_server(sample_images):
    with ImageServer(sample_images[0]) as server:
        yield server
