"""Webhook signatures: `X-Vitrine-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "t.body")>`.

The timestamp is part of the signed material, so a captured request cannot be replayed after
the tolerance window; comparison is constant-time (hmac.compare_digest). Several `v1=` values
may be sent, and several secrets may be active (rotation grace period): any match passes.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable

HEADER = "X-Vitrine-Signature"


class SignatureError(Exception):
    """The request is not authentic; `str()` is safe to return to the caller."""


def compute(secret: str, body: bytes, timestamp: int) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The header value a retailer sends with `body`."""
    ts = int(time.time()) if timestamp is None else timestamp
    return f"t={ts},v1={compute(secret, body, ts)}"


def verify(
    header: str | None, body: bytes, secrets: Iterable[str], *, tolerance_s: int, now: float | None = None
) -> int:
    """Check `header` against every active secret; returns the signed timestamp or raises SignatureError."""
    if not header:
        raise SignatureError(f"missing {HEADER} header")
    ts: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        k, _, v = part.strip().partition("=")
        if k == "t" and v.isascii() and v.isdigit():  # not "²", which isdigit() but int() refuses
            ts = int(v)
        elif k == "v1" and v:
            candidates.append(v)
    if ts is None or not candidates:
        raise SignatureError(f"malformed {HEADER} header: expected t=<unix seconds>,v1=<hex digest>")
    now = time.time() if now is None else now
    if abs(now - ts) > tolerance_s:
        raise SignatureError(f"signature timestamp is outside the {tolerance_s}s tolerance (replay or clock skew)")
    ok = False
    for secret in secrets:
        expected = compute(secret, body, ts)
        for got in candidates:  # no early exit: timing must not depend on which secret matched
            ok |= hmac.compare_digest(expected.encode(), got.encode())  # bytes: non-ASCII text compares too
    if not ok:
        raise SignatureError("signature does not match the request body")
    return ts
