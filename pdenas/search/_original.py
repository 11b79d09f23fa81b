"""The trained original that every candidate compresses (issue 13, item 5).

Without ``weights``, trial 0 trains the original model on the study's budget; its weights are then
the base of every later candidate and their teacher. They are kept in the study directory as
``original.pt`` (a :func:`pdenas.save_compressed` checkpoint with the identity plan, written atomically,
so it also works as ``--weights`` for another study), and their fingerprint is recorded on trial 0. A
trial that starts while trial 0 still runs elsewhere waits for it. On a shared storage (``--storage``)
each machine has its own study directory, so the weights are also kept in the storage
(:meth:`StudyRecord.write_original_weights`) and a worker that lacks the file copies it from there.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import optuna
from optuna.trial import TrialState
from torch import nn

from .._optuna import storage_of
from .._util import atomic_write
from ..distill import model_fingerprint
from ..surgery import CompressionPlan, WeightsError, load_weights, save_compressed
from ._config import SearchConfig
from ._context import SearchContext
from ._record import StudyRecord, TrialRecord
from ._storage import StudyError

__all__ = ["ORIGINAL_FILE", "OriginalUnavailable", "check_original_kept", "keep_original", "use_trained_original"]

ORIGINAL_FILE = "original.pt"


class OriginalUnavailable(StudyError):
    """No candidate can be built: the original's trial failed for good, kept no weights, or they are missing."""

POLL = 1.0  # seconds between looks at the study while trial 0 runs elsewhere
GONE_AFTER = 5.0  # seconds without a running or queued original's trial before waiting gives up (a retry is queued in between)


def keep_original(ctx: SearchContext, model: nn.Module, *, study: optuna.Study, number: int) -> str:
    """Save ``model``, the original as trial ``number`` trained it, in the study directory (and in a
    shared storage); load it as this worker's base. Returns the weights' fingerprint for the trial's record."""
    path = ctx.workspace / ORIGINAL_FILE
    plan = CompressionPlan.identity(ctx.stages)
    metadata = {"trial": number, "accuracy_note": "the original model as trial 0 of this study trained it"}
    atomic_write(path, lambda tmp: save_compressed(tmp, model, plan=plan, model_spec=ctx.config.model,
                                                   input_size=ctx.input_size, num_classes=ctx.num_classes, metadata=metadata))
    fingerprint = model_fingerprint(model)
    if ctx.location is not None and ctx.location.storage_url is not None:
        StudyRecord.write_original_weights(study, storage_of(study), path.read_bytes(), fingerprint)
    if not _loaded(ctx, path, fingerprint):
        raise OriginalUnavailable(f"{path} could not be read back as the original just trained: check the disk, then rerun")
    return fingerprint


def use_trained_original(
    ctx: SearchContext, study: optuna.Study, *, wait: bool = False, on_wait: Callable[[TrialRecord], None] | None = None,
) -> None:
    """Make ``ctx.base_model`` the original trial 0 trained (nothing to do when ``weights`` were given).

    ``wait``: while the original's trial runs (or is queued) elsewhere, wait for it, calling
    ``on_wait(its record)`` once; otherwise a missing result is an error.

    Raises:
        OriginalUnavailable: the original's trial failed for good, or was trained by a pdenas that did not keep
            its weights, or its weights cannot be found (one line, saying what to do).
    """
    if ctx.trained:
        return
    fingerprint = _wait_for_fingerprint(study, wait=wait, on_wait=on_wait)
    path = ctx.workspace / ORIGINAL_FILE
    if _loaded(ctx, path, fingerprint):
        return
    stored = StudyRecord.read_original_weights(study, storage_of(study))  # another machine trained it
    if stored is None or stored[1] != fingerprint:
        raise OriginalUnavailable(
            f"the original model's trained weights ({ORIGINAL_FILE}, fingerprint {fingerprint[:12]}) are not in "
            f"{ctx.workspace}: copy that file from the study directory of the machine that ran trial 0"
        )
    atomic_write(path, lambda tmp: tmp.write_bytes(stored[0]))
    if not _loaded(ctx, path, fingerprint):
        raise OriginalUnavailable(f"{path} does not hold this study's original model: delete it and rerun")


def check_original_kept(study: optuna.Study, config: SearchConfig) -> None:
    """Refuse (one line) to extend a study whose original's trial did not keep its trained weights."""
    original = StudyRecord.from_study(study).original
    if config.weights is None and original.trial_number is not None and original.weights_fingerprint is None:
        raise OriginalUnavailable(_not_kept(original.trial_number))


def _not_kept(number: int) -> str:
    return (f"the original model's trial ({number}) was run by a pdenas that did not keep its trained weights, so no "
            "candidate can be compressed from them: start a new study (another --study-dir)")


def _wait_for_fingerprint(study: optuna.Study, *, wait: bool, on_wait: Callable[[TrialRecord], None] | None) -> str:
    told = False
    gone_since: float | None = None
    while True:
        records = [TrialRecord.from_trial(t) for t in study.get_trials(deepcopy=False)]
        original = StudyRecord.from_study(study, records).original
        if original.weights_fingerprint is not None:
            return original.weights_fingerprint
        if original.trial_number is not None:
            raise OriginalUnavailable(_not_kept(original.trial_number))
        references = [r for r in records if r.reference]
        live = [r for r in references if r.state in (TrialState.RUNNING, TrialState.WAITING)]
        if live and wait:
            gone_since = None
            if not told and on_wait is not None:
                on_wait(live[0])
                told = True
        elif wait and (gone_since is None or time.monotonic() - gone_since < GONE_AFTER):
            gone_since = gone_since if gone_since is not None else time.monotonic()
        else:
            raise OriginalUnavailable(_no_original(references))
        time.sleep(POLL)


def _no_original(references: list[TrialRecord]) -> str:
    live = next((r for r in references if r.state in (TrialState.RUNNING, TrialState.WAITING)), None)
    failed = next((r for r in reversed(references) if r.state == TrialState.FAIL), None)
    if live is not None:
        return (f"the original model's trial ({live.number}) has not finished, and every candidate compresses what it "
                "trains: wait for the search to finish it")
    if failed is not None:
        return (f"the original model's trial ({failed.number}) failed ({failed.failure}), and every candidate compresses "
                "what it trains: fix the cause (e.g. budget.lr) and start a new study, or pass --weights")
    return "the original model's trial has not run yet, and every candidate compresses what it trains: run the search"


def _loaded(ctx: SearchContext, path: Path, fingerprint: str) -> bool:
    """Load ``path`` into the base model if it holds the weights with ``fingerprint``; whether it did."""
    if not path.is_file():
        return False
    try:
        load_weights(ctx.base_model, path)
    except WeightsError:
        return False
    if model_fingerprint(ctx.base_model) != fingerprint:
        return False
    ctx.trained = True
    ctx.features = None  # computed from these weights when first needed
    return True
