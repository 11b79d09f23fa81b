"""Where the shipped search spaces are."""

from __future__ import annotations

from pathlib import Path

__all__ = ["default_space_path", "search_spaces_dir"]


def search_spaces_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "search_spaces"


def default_space_path() -> Path:
    """``search_spaces/default.yaml``: the embedded demo that ``pdenas search`` runs with no arguments."""
    return search_spaces_dir() / "default.yaml"
