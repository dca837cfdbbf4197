"""Pacing of background work on the machine that serves: work for a while, then rest in proportion.

The re-embed's image pages, the IVF tuning's queries and the broker retention's filer requests all follow
one rule: after `busy_s` of work, rest `busy_s x (1 - duty) / duty`, so the work takes `duty` of the time and
serving keeps the rest.
"""

from __future__ import annotations


def check_duty(duty: float) -> float:
    """`duty` if it is a share of the time in (0, 1], else ValueError."""
    if not 0 < duty <= 1:
        raise ValueError(f"duty must be in (0, 1], not {duty}")
    return duty


def rest_after(busy_s: float, duty: float) -> float:
    """Seconds to rest after `busy_s` of work so that work is `duty` of the time."""
    return busy_s * (1 - duty) / duty
