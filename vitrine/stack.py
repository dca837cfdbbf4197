"""The embedded stack: start what is not configured (broker, Postgres), prepare both, stop in order.

`vitrine up` runs one of these in the foreground and records the addresses in
DATA_DIR/stack.json, so `vitrine worker`, `vitrine api` and friends find them without settings.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field

from sqlalchemy import text

from core.settings import Settings
from db.embedded import EmbeddedPostgres
from db.migrate import upgrade
from db.session import create_db_engine
from streams.embedded_broker import ManagedBroker, port_open
from streams.retention import RetentionProcess
from streams.topics import ensure_topics

log = logging.getLogger(__name__)


class StackError(RuntimeError):
    """A dependency is unreachable or cannot start; the message names what and where."""


@dataclass
class EmbeddedStack:
    settings: Settings
    broker: ManagedBroker | None = None
    postgres: EmbeddedPostgres | None = None
    retention: RetentionProcess | None = None
    resolved: Settings | None = None
    wrote_stack_file: bool = field(default=False)

    def start(self) -> Settings:
        """Start the embedded parts, migrate, create topics; returns settings with real addresses."""
        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        self._refuse_second_stack()
        try:
            kafka, db_url = s.kafka_bootstrap, s.database_url
            if not db_url:
                self.postgres = EmbeddedPostgres(s.data_dir / "postgres").start()
                db_url = self.postgres.url
            if not kafka:
                # Durable by default, on the port recorded in the data dir: a restart loses nothing
                # acknowledged and comes back where running clients expect it.
                self.broker = ManagedBroker(
                    s.data_dir / "broker", storage=s.broker_storage, kafka_port=s.kafka_port
                ).start()
                kafka = self.broker.bootstrap
            self.resolved = s.model_copy(update={"kafka_bootstrap": kafka, "database_url": db_url})
            prepare(self.resolved)
            if self.broker and self.broker.storage == "durable" and s.broker_retention_interval_s > 0:
                # Tansu lists every stored batch of a partition on each fetch and never deletes one: without
                # this a partition's readers slow down, then stall, after a few thousand batches. In a process of
                # its own: a bench or the demo that embeds this stack runs its load in this one.
                self.retention = RetentionProcess(
                    self.broker.bucket(),
                    kafka,
                    interval_s=s.broker_retention_interval_s,
                    min_age_s=s.broker_retention_min_age_s,
                ).start()
            if self.broker or self.postgres:
                s.stack_file.write_text(
                    json.dumps(
                        {
                            "kafka_bootstrap": kafka,
                            "database_url": db_url,
                            "pid": os.getpid(),
                            "broker_storage": self.broker.storage if self.broker else "external",
                        },
                        indent=2,
                    )
                )
                self.wrote_stack_file = True
            return self.resolved
        except StackError:
            self.stop()
            raise
        except RuntimeError as exc:  # a part could not start: its message says which and why
            self.stop()
            raise StackError(str(exc)) from None
        except Exception:
            self.stop()
            raise

    def _refuse_second_stack(self) -> None:
        f = self.settings.stack_file
        if not f.exists():
            return
        try:
            pid = json.loads(f.read_text()).get("pid")
        except (ValueError, OSError):
            pid = None
        if pid and _alive(pid):
            raise StackError(
                f"an embedded stack (pid {pid}) already runs on {self.settings.data_dir}; "
                "stop it first or use another VITRINE_DATA_DIR"
            )
        f.unlink(missing_ok=True)  # left over from a killed run

    def stop(self) -> None:
        """Stop in reverse order; never raises."""
        if self.wrote_stack_file:
            self.settings.stack_file.unlink(missing_ok=True)
            self.wrote_stack_file = False
        if self.retention is not None:  # before the broker: a pass must not meet it half stopped
            try:
                self.retention.stop()
            except Exception:  # keep stopping the rest
                log.exception("failed to stop the broker retention")
            self.retention = None
        for part in (self.broker, self.postgres):
            if part is not None:
                try:
                    part.stop()
                except Exception:  # keep stopping the rest
                    log.exception("failed to stop %s", type(part).__name__)
        self.broker = self.postgres = None


def prepare(settings: Settings) -> None:
    """Check both dependencies, run migrations and create topics (idempotent)."""
    check_database(settings.database_url)
    upgrade(settings.database_url)
    check_kafka(settings.kafka_bootstrap)
    try:
        ensure_topics(settings)
    except Exception as exc:
        raise StackError(f"Kafka at {settings.kafka_bootstrap} is unreachable: {exc}") from None


def check_database(url: str, timeout_s: int = 5) -> None:
    """Connect once, or raise StackError naming the database."""
    engine = create_db_engine(url, connect_args={"connect_timeout": timeout_s})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        where = engine.url.render_as_string(hide_password=True)
        raise StackError(f"Postgres at {where} is unreachable: {str(exc).splitlines()[0]}") from None
    finally:
        engine.dispose()


def check_kafka(bootstrap: str, timeout_s: float = 3.0) -> None:
    """Fail fast if no bootstrap address accepts a TCP connection (kafka clients retry for ~30 s)."""
    for hostport in bootstrap.split(","):
        host, _, port = hostport.strip().rpartition(":")
        if port.isdigit() and port_open(host.strip("[]") or "localhost", int(port), timeout=timeout_s):
            return
    raise StackError(f"Kafka at {bootstrap} is unreachable: no bootstrap address accepts connections")


def running_broker_storage(settings: Settings) -> str | None:
    """Storage of the broker of the `vitrine up` on settings.data_dir: durable, memory, external; None if none runs."""
    try:
        stack = json.loads(settings.stack_file.read_text())
    except (OSError, ValueError):
        return None
    return stack.get("broker_storage", "memory") if _alive(stack.get("pid", 0)) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
