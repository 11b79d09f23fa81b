"""Storage URLs with their secrets masked, so that they can be printed, logged and put in reports.

A storage URL such as ``postgresql://user:secret@host/db`` carries a password. Everything pdenas
shows a person (terminal, report, error message) passes the URL through :func:`mask_url` first.
SQLAlchemy parses the URL and hides the password of its authority
(``make_url(url).render_as_string(hide_password=True)``); it leaves query parameters alone, so the
ones that carry a secret (``?password=``, ``?sslpassword=``, which libpq and SQLAlchemy accept) are
masked here.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode

__all__ = ["mask_url", "MASK", "SECRET_QUERY_KEYS"]

MASK = "***"

# query parameters that carry a secret (libpq and SQLAlchemy accept ``?password=...``)
SECRET_QUERY_KEYS = frozenset({"password", "passwd", "pwd", "pass", "secret", "token", "sslpassword"})

_USERINFO_PASSWORD = re.compile(r"(://[^:/?#@\s]*:)[^@/\s]*@")  # "://user:" then the password up to "@"


def mask_url(url: str) -> str:
    """``url`` with its password (in the authority or the query) replaced by ``***``.

    Text that is not a URL with credentials comes back unchanged, so any string may be passed.

    >>> mask_url("postgresql://user:secret@host/db")
    'postgresql://user:***@host/db'
    """
    if "://" not in url:  # cheap: error messages are masked word by word
        return url
    from sqlalchemy.engine import make_url  # imported here: only a URL needs it
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # SQLAlchemy can't parse it (a bad port, a scheme with a '-')
        return _USERINFO_PASSWORD.sub(rf"\g<1>{MASK}@", url)  # a typo must not show the password
    secret_query = any(key.lower() in SECRET_QUERY_KEYS for key in parsed.query)
    if parsed.password is None and not secret_query:
        return url
    # the query starts at the first "?" after the authority (a password may itself hold a "?")
    split = url.find("?", url.rfind("@") + 1)
    base, query = (url, "") if split < 0 else (url[:split], url[split + 1 :])
    if parsed.password is not None:
        base = make_url(base).render_as_string(hide_password=True)
    if secret_query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(key, MASK if key.lower() in SECRET_QUERY_KEYS else value) for key, value in pairs], safe="*")
    return f"{base}?{query}" if split >= 0 else base
