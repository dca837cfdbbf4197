"""Outages are waits, not failures: which database errors mean "not there now", and waiting them out.

The worker must tell an outage (connection refused or lost, the server shutting down or refusing
connections, a pool with no connection to give) from an error caused by the event's data (a value out
of range, a constraint): the first is waited out for as long as it lasts, with the partition held, so
nothing is dead-lettered because of it; the second fails the event alone and dead-letters it. A data
error taken for an outage would hold its partition forever, so the rule is narrow: a psycopg
OperationalError without a SQLSTATE (raised by the client: it could not connect, or lost the
connection), SQLSTATE class 08 (connection exception) and a few server states named below.

`DatabaseHealth` is the worker's view of the database (gauges on /metrics/, read by `vitrine status`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

import psycopg
from sqlalchemy.exc import DBAPIError, DisconnectionError, StatementError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_never, wait_random_exponential

from streams import metrics

log = logging.getLogger(__name__)
T = TypeVar("T")

# Server states that say "not now" about the server, never about the statement: shutting down
# (57P01 admin, 57P02 crash), starting up or in recovery (57P03), too many connections (53300),
# disk full (53100: the write fails whatever the event holds, and succeeds once space is freed).
OUTAGE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300", "53100"})
# Worth a few more tries, but not forever: another transaction won a lock or a serialisation race.
TRANSIENT_SQLSTATE_CLASSES = ("40",)  # 40001 serialization_failure, 40P01 deadlock_detected
TRANSIENT_SQLSTATES = frozenset({"55P03"})  # lock_not_available
# Full jitter between 0 and 0.5 x 2^n s, at most OUTAGE_MAX_WAIT_S: a worker notices the database's
# return within 5 s, and the workers one outage stopped together do not all reconnect at one instant.
OUTAGE_MAX_WAIT_S = 5.0


def _chain(exc: BaseException):
    """The exception, the DBAPI error it wraps, and its causes."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [getattr(e, "orig", None), e.__cause__]


def is_outage(exc: BaseException) -> bool:
    """True if `exc` says the database (or the connection to it) is not there now, whatever the event held."""
    for e in _chain(exc):
        if isinstance(e, DisconnectionError | PoolTimeout | ConnectionError):
            return True
        if isinstance(e, DBAPIError) and e.connection_invalidated:
            return True
        if isinstance(e, psycopg.OperationalError):
            state = e.sqlstate
            return state is None or state.startswith("08") or state in OUTAGE_SQLSTATES
        if isinstance(e, psycopg.InterfaceError) and e.sqlstate is None and "connection" in str(e):
            return True  # "cannot execute operations: the connection is in status BAD"
    return False


def is_transient(exc: BaseException) -> bool:
    """True for a lost lock or serialisation race: worth a few tries, but (unlike an outage) not forever."""
    for e in _chain(exc):
        if isinstance(e, psycopg.Error) and e.sqlstate:
            return e.sqlstate.startswith(TRANSIENT_SQLSTATE_CLASSES) or e.sqlstate in TRANSIENT_SQLSTATES
    return False


def failure_reason(exc: BaseException) -> str:
    """`Type: message` for a dead letter: the driver's message without SQLAlchemy's SQL text and parameters.

    A statement's parameters may hold other events of its batch (other tenants' ids); the message
    of a statement about one event holds only that event's values.
    """
    if isinstance(exc, StatementError) and exc.orig is not None:
        exc = exc.orig
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:1000]


class DatabaseHealth:
    """Up, or down since when: set by the waits below, mirrored to the worker's gauges and logs."""

    def __init__(self) -> None:
        self.down_since: float | None = None

    def down(self, exc: BaseException) -> None:
        """Note a failed attempt; the first one of an outage is logged as an error and starts the clock."""
        if self.down_since is None:
            self.down_since = time.time()
            log.error(
                "database unreachable since %s: %s; holding the stream until it returns",
                datetime.fromtimestamp(self.down_since, UTC).isoformat(timespec="seconds"),
                failure_reason(exc)[:300],
            )
        metrics.DATABASE_UP.set(0)
        metrics.DATABASE_DOWN_SINCE.set(self.down_since)

    def up(self) -> None:
        """Note a successful attempt; ends an outage (logged with its length)."""
        if self.down_since is not None:
            log.warning("database reachable again after %.1f s", time.time() - self.down_since)
            self.down_since = None
        metrics.DATABASE_UP.set(1)
        metrics.DATABASE_DOWN_SINCE.set(0)


DATABASE = DatabaseHealth()  # the process's view, like the metrics it feeds


def until_reachable(health: DatabaseHealth = DATABASE) -> AsyncRetrying:
    """Retry for as long as the error is an outage (bounded, jittered waits); any other error is raised at once."""

    def waiting(state: RetryCallState) -> None:
        health.down(state.outcome.exception())
        metrics.OUTAGE_WAITS.inc()
        log.info("database unreachable (attempt %d): retrying in %.1f s", state.attempt_number, state.next_action.sleep)

    return AsyncRetrying(
        stop=stop_never,
        wait=wait_random_exponential(multiplier=0.5, max=OUTAGE_MAX_WAIT_S),
        retry=retry_if_exception(is_outage),
        before_sleep=waiting,
        reraise=True,
    )


async def wait_out_outages(fn: Callable[[], Awaitable[T]], health: DatabaseHealth = DATABASE) -> T:
    """`await fn()`, called again after each outage error until it returns or raises something else."""

    async def call() -> T:  # a coroutine function, so tenacity awaits what a lambda `fn` returns
        return await fn()

    result = await until_reachable(health)(call)
    health.up()
    return result
