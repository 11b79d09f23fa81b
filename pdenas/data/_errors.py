"""The one error the data layer raises: a ``ValueError`` whose message is one line saying what was
wrong and how to fix it."""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """A dataset cannot be loaded or batched as asked (the message says what to change)."""
