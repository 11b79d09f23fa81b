"""The export's one error type."""

__all__ = ["ExportError"]


class ExportError(Exception):
    """A trial could not be exported; the one-line message says why and what to do."""
