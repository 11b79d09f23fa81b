"""Storage URLs with their secrets masked, so that they can be printed, logged and put in reports.

A storage URL such as ``postgresql://user:secret@host/db`` carries a password. Everything pdenas
shows a person (terminal, report, error message) passes the URL through :func:`mask_url` first.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["mask_url", "MASK", "SECRET_QUERY_KEYS"]

MASK = "***"

# query parameters that carry a secret (libpq and SQLAlchemy accept ``?password=...``)
SECRET_QUERY_KEYS = frozenset({"password", "passwd", "pwd", "pass", "secret", "token", "sslpassword"})


def mask_url(url: str) -> str:
    """``url`` with its password (in the authority or the query) replaced by ``***``.

    Text that is not a URL with credentials comes back unchanged, so any string may be passed.

    >>> mask_url("postgresql://user:secret@host/db")
    'postgresql://user:***@host/db'
    """
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # not parseable as a URL (e.g. an invalid port): nothing to mask
        return url
    if not parts.scheme or not (parts.netloc or parts.query):
        return url
    netloc = parts.netloc
    if password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{MASK}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(key.lower() in SECRET_QUERY_KEYS for key, _ in pairs):
            masked = [(key, MASK if key.lower() in SECRET_QUERY_KEYS else value) for key, value in pairs]
            query = urlencode(masked, safe="*")
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
