"""Secrets kept out of output: a password in a URL masked, a secret setting shown only as set or empty.

Everything vitrine prints or logs about its configuration goes through `masked`: `vitrine config`,
`vitrine up`'s summary, error lines that name a database. A URL keeps its scheme, user, host, port
and database (what an operator needs to see where it points), never its password.
"""

from __future__ import annotations

import re

from pydantic import SecretStr

MASK = "***"
# user:password@ in a URL's authority; up to the last @ before the path (an unencoded @ in a password too).
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.\-]*://[^:/@\s]*:)[^/\s]+@", re.IGNORECASE)
# password=... in a query string or a libpq key=value string.
_KEY_PASSWORD = re.compile(r"(?P<head>(?:^|[?&\s])password=)[^&\s]+", re.IGNORECASE)


def mask_url(text: str) -> str:
    """`text` with the password of every URL in it (and any `password=` value) replaced by ***."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}@", text)
    return _KEY_PASSWORD.sub(lambda m: f"{m['head']}{MASK}", text)


def masked(value: object) -> str:
    """A setting's value as it may be printed: a secret as (set) or (empty), a URL without its password."""
    if isinstance(value, SecretStr):
        return "(set)" if value.get_secret_value() else "(empty)"
    return mask_url(str(value))
