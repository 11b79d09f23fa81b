"""The cache folder and the decoded-image disk cache.

Decoding a folder or archive of images is done once per machine: the uint8 tensors are saved to
``<cache_dir>/<name>-<key>.pt`` (written atomically, so parallel workers never read half a file) and
later processes load them with ``torch.load(weights_only=True)``. A file that cannot be read back or
does not hold what it should is ignored (and rebuilt by the caller).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from .._util import atomic_write

__all__ = ["CACHE_ENV", "cache_file", "read_cache", "resolve_cache_dir", "write_cache"]

CACHE_ENV = "PDENAS_CACHE_DIR"
_FORMAT = 2  # bump when the layout of a cache file, or which files are read, changes (2: no .gif)


def resolve_cache_dir(cache_dir: str | Path | None) -> Path:
    """``cache_dir``, else ``$PDENAS_CACHE_DIR``, else ``~/.cache/pdenas`` (absolute, not created)."""
    if cache_dir is None:
        cache_dir = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "pdenas"
    return Path(cache_dir).expanduser().resolve()


def cache_file(cache_dir: Path, name: str, *key: object) -> Path:
    """Where the decoded images identified by ``key`` live: ``<cache_dir>/<name>-<sha256[:20]>.pt``."""
    digest = hashlib.sha256(repr((_FORMAT, *key)).encode()).hexdigest()[:20]
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)[:60] or "images"
    return cache_dir / f"{safe}-{digest}.pt"


def read_cache(path: Path) -> dict[str, Any] | None:
    """The payload saved at ``path``, or None when it is absent, unreadable or malformed."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001  (corrupt, truncated or from an incompatible torch: rebuild it)
        return None
    if not _well_formed(payload):
        return None
    return payload


def write_cache(path: Path, payload: dict[str, Any]) -> None:
    """Save ``payload`` at ``path`` atomically; warn (once, one line) and go on if that fails."""
    payload = {**payload, "format": _FORMAT}
    try:
        atomic_write(path, lambda tmp: torch.save(payload, tmp))  # mode 644: the cache is meant to be shared
    except OSError as err:
        warnings.warn(
            f"could not write the decoded-image cache {path} ({err.strerror or err}): images will be decoded "
            f"again next time; set {CACHE_ENV} or cache_dir= to a writable folder",
            stacklevel=3,
        )


def _well_formed(payload: object) -> bool:
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        return False
    x, y, classes = payload.get("x"), payload.get("y"), payload.get("classes")
    return (
        isinstance(x, torch.Tensor) and x.dtype == torch.uint8 and x.dim() == 4
        and isinstance(y, torch.Tensor) and y.dtype == torch.int64 and y.shape == (x.shape[0],)
        and isinstance(classes, list) and all(isinstance(c, str) for c in classes)
        and isinstance(payload.get("skipped"), int) and isinstance(payload.get("first_skipped"), str)
        and (y.numel() == 0 or 0 <= int(y.min()) <= int(y.max()) < len(classes))
    )
