"""Small helpers every layer of pdenas uses: one line of an error, atomic file writes, and train/eval
flags restored module by module."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from torch import nn

__all__ = ["atomic_write", "atomic_write_text", "first_line", "preserved_modes"]


def first_line(err: BaseException, *, limit: int = 300) -> str:
    """The first non-empty line of ``err``'s message (its type name when empty), at most ``limit`` characters."""
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return (lines[0].strip() if lines else type(err).__name__)[:limit]


def atomic_write(path: str | Path, write: Callable[[Path], None], *, mode: int = 0o644) -> None:
    """Write ``path`` in one step: ``write(tmp)`` fills a temporary file beside it, which then replaces it.

    A reader never sees a half-written file, and a crash leaves the old file (or none). ``mode``: the
    file's permissions (``0o600`` for files that may hold a password).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)  # writers that go by the suffix
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb") as handle:  # on disk before it takes the name
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str, *, mode: int = 0o644) -> None:
    """:func:`atomic_write` of UTF-8 text."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), mode=mode)


@contextlib.contextmanager
def preserved_modes(model: nn.Module, training: bool | None = None) -> Iterator[nn.Module]:
    """Inside the block ``model`` is in train (``training=True``) or eval (False) mode, or as it was
    (None); afterwards every module gets back its own flag (a frozen BatchNorm in eval mode stays so)."""
    modes = [(module, module.training) for module in model.modules()]
    if training is not None:
        model.train(training)
    try:
        yield model
    finally:
        for module, flag in modes:
            module.training = flag
