"""Rate-limited logging for client libraries that log every retry: one line per message per interval, with a count.

While the broker is down aiokafka logs each failed connect, metadata refresh and produce attempt:
~40 lines a second from one API process (measured, docs/reliability.md), which buries everything
else and fills disks. The filter lets the first record of a message template through, drops the
same template for `interval_s`, and the next one that passes says how many were dropped.
"""

from __future__ import annotations

import logging
import threading
import time

DEFAULT_INTERVAL_S = 10.0


class ThrottleFilter(logging.Filter):
    """Pass one record per (logger, level, message template) per `interval_s`; the next one counts the dropped."""

    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S, clock=time.monotonic):
        super().__init__()
        self.interval_s, self.clock = interval_s, clock
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}  # key -> (passed at, dropped since)
        self._lock = threading.Lock()  # handlers may run on several threads (anyio's pool)

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))  # the template: its arguments vary per attempt
        now = self.clock()
        with self._lock:
            passed_at, dropped = self._seen.get(key, (None, 0))
            if passed_at is not None and now - passed_at < self.interval_s:
                self._seen[key] = (passed_at, dropped + 1)
                return False
            self._seen[key] = (now, 0)
        if dropped:
            record.msg = f"{record.msg} ({dropped} more like this in the last {now - passed_at:.0f}s)"
        return True


_installed: dict[str, ThrottleFilter] = {}


def throttle(prefix: str, interval_s: float = DEFAULT_INTERVAL_S) -> ThrottleFilter:
    """Throttle every logger named `prefix` or `prefix.*` (idempotent); returns the shared filter.

    A filter on a logger sees only that logger's own records, not its children's, so it goes on
    each of them: the library's module loggers exist once it is imported.
    """
    flt = _installed.setdefault(prefix, ThrottleFilter(interval_s))
    names = [n for n in list(logging.Logger.manager.loggerDict) if n == prefix or n.startswith(prefix + ".")]
    for name in [prefix, *names]:
        logger = logging.getLogger(name)
        if flt not in logger.filters:
            logger.addFilter(flt)
    return flt
