"""How one stage is trained locally: :class:`StageRecipe`.

A stage-wise step is a regression on cached features (the original stage's input -> its output), not
classification on images, so it has its own small recipe rather than :class:`pdenas.train.TrainRecipe`,
whose label smoothing, augmentation, subset, validation split and logit distillation mean nothing
here: part of a variant's identity, those fields would split identical variants apart in the store.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

from .._memory_format import ChannelsLast
from ._errors import DistillError

__all__ = ["StageRecipe"]

_OPTIMIZERS = ("adamw", "sgd")
_SCHEDULES = ("cosine", "constant")
_PRECISIONS = ("fp32", "bf16", "auto")


@dataclass(frozen=True)
class StageRecipe:
    """Local training of one stage on the original's stage features.

    Attributes:
        epochs: passes over the cached training features (>= 1).
        batch_size: feature maps per step.
        optimizer: ``adamw`` (the default: the loss scale differs from stage to stage, and Adam's
            per-parameter steps do not care) or ``sgd`` (Nesterov momentum).
        lr: peak learning rate; weight_decay: the optimizer's, not applied to BN, biases and scalar gates.
        momentum: of ``sgd``.
        schedule: ``cosine`` (decay to 0 over all steps) or ``constant``.
        precision: ``fp32``, ``bf16`` (autocast; about 1.9x faster on CPUs with AVX-512 BF16) or ``auto``
            (bf16 where the hardware computes it natively, see :func:`pdenas.train.bf16_supported`).
        channels_last: train in channels-last memory format: ``true``, ``false`` or ``auto`` (on CUDA only, as
            :class:`pdenas.train.TrainRecipe`).
        seed: seeds the new layers' initial weights and the order of the batches.
    """

    epochs: int = 2
    batch_size: int = 64
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = 1e-2
    weight_decay: float = 0.0
    momentum: float = 0.9
    schedule: Literal["cosine", "constant"] = "cosine"
    precision: Literal["fp32", "bf16", "auto"] = "auto"
    channels_last: ChannelsLast = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        problem = _problem(self)
        if problem:
            raise DistillError(f"StageRecipe: {problem}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageRecipe:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DistillError(f"StageRecipe: unknown setting(s) {unknown}; valid settings are {sorted(known)}")
        return cls(**data)


def _problem(r: StageRecipe) -> str | None:
    checks = [
        (_is_int(r.epochs) and r.epochs >= 1, f"epochs must be an integer >= 1, got {r.epochs!r}"),
        (_is_int(r.batch_size) and r.batch_size >= 1, f"batch_size must be an integer >= 1, got {r.batch_size!r}"),
        (r.optimizer in _OPTIMIZERS, f"optimizer must be adamw or sgd, got {r.optimizer!r}"),
        (_finite(r.lr) and r.lr > 0, f"lr must be a number > 0, got {r.lr!r}"),
        (_finite(r.weight_decay) and r.weight_decay >= 0, f"weight_decay must be >= 0, got {r.weight_decay!r}"),
        (_finite(r.momentum) and 0 <= r.momentum < 1, f"momentum must lie in [0, 1), got {r.momentum!r}"),
        (r.schedule in _SCHEDULES, f"schedule must be cosine or constant, got {r.schedule!r}"),
        (r.precision in _PRECISIONS, f"precision must be fp32, bf16 or auto, got {r.precision!r}"),
        (isinstance(r.channels_last, bool) or r.channels_last == "auto", f"channels_last must be true, false or auto, got {r.channels_last!r}"),
        (_is_int(r.seed), f"seed must be an integer, got {r.seed!r}"),
    ]
    return next((message for ok, message in checks if not ok), None)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
