"""Child processes of the embedded services (broker, S3 server): stop one and wait until its ports are free."""

from __future__ import annotations

import logging
import os
import signal
import subprocess

log = logging.getLogger(__name__)


def stop_child(proc: subprocess.Popen | None, what: str, timeout_s: float) -> None:
    """SIGTERM, wait for the process to exit (so its ports are free again), SIGKILL if it hangs."""
    if proc is None or proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        log.warning("%s ignored SIGTERM for %.0fs, killing it", what, timeout_s)
        proc.kill()
        proc.wait()
    log.info("%s stopped", what)
