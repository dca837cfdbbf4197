"""A whole vitrine on this machine for the demo and the benchmarks: stack, api and worker processes.

Reuses a running `vitrine up` if there is one, else starts the embedded stack itself; then runs
`vitrine api` and `vitrine worker` as child processes and stops everything on exit.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.settings import Settings, StackNotRunning
from db.models import Tenant
from db.session import create_db_engine, session_factory
from db.tenants import TenantCredentials, create_tenant
from streams.embedded_broker import free_port
from vitrine import procs
from vitrine.stack import EmbeddedStack

log = logging.getLogger(__name__)


@dataclass
class LocalSystem:
    settings: Settings  # resolved: real broker and database addresses
    base_url: str
    engine: Engine
    sessions: sessionmaker[Session]
    logs: Path
    worker: object
    started_stack: bool
    api: object = None  # the api process (subprocess.Popen)

    def fresh_tenant(self, tenant_id: str, name: str, default_arm: str = "visual") -> TenantCredentials:
        """Recreate a tenant so a run starts from an empty catalog with known keys."""
        with self.sessions.begin() as s:
            old = s.get(Tenant, tenant_id)
            if old is not None:
                s.delete(old)
                s.flush()
            return create_tenant(s, name, tenant_id, default_arm=default_arm)


def start_local_system(
    settings: Settings,
    stack: ExitStack,
    *,
    name: str,
    allow_hosts: str = "127.0.0.1",
    extra_env: dict[str, str] | None = None,
) -> LocalSystem:
    """Start (or reuse) the stack and an api + worker; cleanup is registered on `stack`."""
    started = False
    try:
        resolved = settings.resolved()
    except StackNotRunning:
        embedded = EmbeddedStack(settings)
        resolved = embedded.start()
        stack.callback(embedded.stop)
        started = True
    engine = create_db_engine(resolved.database_url)
    stack.callback(engine.dispose)
    api_port = free_port()
    env = {
        "VITRINE_KAFKA_BOOTSTRAP": resolved.kafka_bootstrap,
        "VITRINE_DATABASE_URL": resolved.database_url,
        "VITRINE_DATA_DIR": str(settings.data_dir.resolve()),
        "VITRINE_API_PORT": str(api_port),
        "VITRINE_WORKER_WEB_PORT": str(free_port()),
        "VITRINE_FETCH_ALLOW_HOSTS": allow_hosts,
        # Topics and consumer group as resolved here (settings built in code are not in os.environ).
        "VITRINE_TOPIC_PREFIX": resolved.topic_prefix,
        "VITRINE_APP_ID": resolved.app_id,
        "VITRINE_TOPIC_PARTITIONS": str(resolved.topic_partitions),
        **(extra_env or {}),
    }
    logs = settings.data_dir / name / "logs"
    worker = procs.spawn(["worker"], env, logs / "worker.log")
    stack.callback(procs.stop, worker)
    api = procs.spawn(["api"], env, logs / "api.log")
    stack.callback(procs.stop, api)
    base = f"http://127.0.0.1:{api_port}"
    procs.wait_http(f"{base}/healthz", api, timeout_s=90, log_path=logs / "api.log")
    return LocalSystem(resolved, base, engine, session_factory(engine), logs, worker, started, api)
