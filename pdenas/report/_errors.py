"""The one error the report package raises: a one-line message saying what was wrong and how to fix it."""

from __future__ import annotations

__all__ = ["ReportError"]


class ReportError(Exception):
    """A study could not be opened, summarised or a trial selected; the message says why and what to do."""
