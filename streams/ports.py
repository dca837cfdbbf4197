"""TCP ports for the embedded services: free now, or free for good (outside the kernel's ephemeral range)."""

from __future__ import annotations

import random
import socket
from pathlib import Path

# Below the ephemeral range no outgoing connection is ever given the port, so a port recorded
# for a service stays free between its restarts (unless another service is configured on it).
_RESERVED_LOW = 20000


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports (Linux; the IANA range elsewhere)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[:2]
        return int(low), int(high)
    except (OSError, ValueError):
        return 49152, 65535


def lasting_port(host: str = "127.0.0.1", taken: set[int] = frozenset()) -> int:
    """A free port outside the ephemeral range, to be recorded and reused across restarts."""
    low, _ = ephemeral_range()
    if low - _RESERVED_LOW < 1000:  # a machine configured with almost no room below the range
        return free_port(host)
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(_RESERVED_LOW, low)
        if port not in taken and _bindable(host, port):
            return port
    return free_port(host)
