"""A folder of distilled stage variants, shared by every trial and every worker of a study.

Each variant is trained once: its entry ``<key>.pt`` (:meth:`StageVariant.key`) holds its figures and
the stage's weights, and every later request loads it. Workers on one machine share the folder:
``filelock`` gives each variant a lock (``<key>.lock``), so when two ask for the same missing variant
one trains it while the other waits, then loads what the first wrote; different variants train in
parallel. Entries are written with :func:`pdenas._util.atomic_write` (a temporary file renamed into
place), so a writer that crashes leaves no entry, never a partial one, and the operating system
releases a dead process's lock, so the next request trains the variant again.

Entry format (``torch.load(weights_only=True)``)::

    {"format": "pdenas.stage-variant", "format_version": 1,
     "result": StageResult.to_dict(),          # variant, losses, time, images, error
     "state_dict": {key: tensor}}               # the stage's entries of the candidate's state dict
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from torch import nn

from .._util import atomic_write, first_line
from ._distill import distill_stage
from ._features import StageFeatures
from ._variant import StageResult, StageVariant

__all__ = ["VariantStore"]

FORMAT = "pdenas.stage-variant"
FORMAT_VERSION = 1


class VariantStore:
    """Distilled stage variants in ``folder`` (created on first write).

    Args:
        folder: the store's folder (a study keeps it next to its trials).
        timeout: seconds to wait for another process training the same variant; -1 waits as long as it takes.
    """

    def __init__(self, folder: str | Path, *, timeout: float = -1) -> None:
        self.folder = Path(folder)
        self.timeout = timeout

    def path(self, variant: StageVariant) -> Path:
        return self.folder / f"{variant.key()}.pt"

    def __contains__(self, variant: object) -> bool:
        return isinstance(variant, StageVariant) and self.get(variant) is not None

    def get(self, variant: StageVariant) -> StageResult | None:
        """The stored result of ``variant`` (with its weights, ``reused=True``), or None."""
        path = self.path(variant)
        if not path.is_file():
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
            result = StageResult.from_dict(entry["result"], state_dict=entry["state_dict"], reused=True)
        except Exception as err:  # noqa: BLE001 - an unreadable entry is retrained, not fatal
            warnings.warn(f"ignoring unreadable stage variant {path.name}: {first_line(err)}", stacklevel=2)
            return None
        if entry.get("format") != FORMAT or entry.get("format_version") != FORMAT_VERSION or result.variant != variant:
            return None
        return result

    def get_or_distill(
        self,
        original: nn.Module,
        variant: StageVariant,
        features: StageFeatures,
        *,
        device: str | torch.device = "auto",
    ) -> StageResult:
        """The stored result of ``variant``, distilling (:func:`distill_stage`) and storing it first if no
        process has; ``reused`` says which happened."""
        found = self.get(variant)
        if found is not None:
            return found
        self.folder.mkdir(parents=True, exist_ok=True)
        with FileLock(self.folder / f"{variant.key()}.lock", timeout=self.timeout):
            found = self.get(variant)  # another process may have written it while this one waited
            if found is not None:
                return found
            result = distill_stage(original, variant, features, device=device)
            self.put(result)
        return result

    def put(self, result: StageResult) -> Path:
        """Write ``result`` (atomically: a crash leaves the old entry or none)."""
        entry: dict[str, Any] = {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "result": result.to_dict(), "state_dict": dict(result.state_dict),
        }
        path = self.path(result.variant)
        atomic_write(path, lambda tmp: torch.save(entry, tmp))
        return path

    def results(self) -> list[StageResult]:
        """Every readable entry (with weights), sorted by stage, then kept blocks, then key."""
        results = []
        for path in sorted(self.folder.glob("*.pt")) if self.folder.is_dir() else []:
            if path.name.startswith("."):
                continue  # a temporary file being written
            try:
                entry = torch.load(path, map_location="cpu", weights_only=True)
                results.append(StageResult.from_dict(entry["result"], state_dict=entry["state_dict"], reused=True))
            except Exception as err:  # noqa: BLE001 - skip what is not an entry
                warnings.warn(f"ignoring unreadable stage variant {path.name}: {first_line(err)}", stacklevel=2)
        return sorted(results, key=lambda r: (r.stage, r.variant.keep, r.variant.key()))
