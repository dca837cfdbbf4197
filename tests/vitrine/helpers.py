"""Helpers of the roof's tests: `vitrine` commands and `vitrine up` as a user runs them (real processes)."""

from __future__ import annotations

import os
import subprocess
import sys


def vitrine(*args, env=None, timeout=120) -> subprocess.CompletedProcess:
    """Run one `vitrine` command to completion."""
    return subprocess.run(
        [sys.executable, "-m", "vitrine", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie does not count)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[-1].split()[0] != "Z"


def start_up(env) -> tuple[subprocess.Popen, str]:
    """Start `vitrine up`; returns the process and its output up to the `ready` line."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "vitrine", "up"],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    while True:
        line = proc.stdout.readline()
        assert line, f"vitrine up exited early:\n{''.join(lines)}"
        lines.append(line)
        if line.startswith("ready"):
            return proc, "".join(lines)
