"""Cheap probes of what the API depends on: one `SELECT 1` on the pool, one TCP connect to the broker.

The answers name the kind of failure only (/healthz is public: no addresses, socket paths or server messages).
"""

from __future__ import annotations

import asyncio

import anyio
import anyio.to_thread
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

PROBE_TIMEOUT_S = 2.0


def _state(error: str | None, **extra) -> dict:
    return {"ok": error is None, "error": error, **extra}


async def database_state(engine: Engine, timeout_s: float = PROBE_TIMEOUT_S) -> dict:
    """`{"ok", "error"}` of a `SELECT 1` through the API's own pool (a pooled connection: well under 1 ms)."""

    def probe() -> None:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    try:
        with anyio.fail_after(timeout_s):
            # abandon_on_cancel: a connect that hangs (a dropped route) must not hold the answer past the timeout
            await anyio.to_thread.run_sync(probe, abandon_on_cancel=True)
    except TimeoutError:
        return _state(f"no answer within {timeout_s:g}s")
    except SQLAlchemyError as exc:
        return _state(f"{type(getattr(exc, 'orig', None) or exc).__name__}: no connection or no answer")
    return _state(None)


async def broker_state(bootstrap: str, timeout_s: float = PROBE_TIMEOUT_S, **extra) -> dict:
    """`{"ok", "error"}`: whether any bootstrap server accepts a TCP connection (the broker is listening)."""
    errors = []
    for server in (s.strip() for s in bootstrap.split(",") if s.strip()):
        host, _, port = server.rpartition(":")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host.strip("[]"), int(port)), timeout_s)
        except (OSError, ValueError, TimeoutError) as exc:
            errors.append(type(exc).__name__)
            continue
        writer.close()
        return _state(None, **extra)
    return _state(f"no bootstrap server accepts connections ({', '.join(sorted(set(errors))) or 'none set'})", **extra)
