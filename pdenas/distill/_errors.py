"""Errors of stage-wise distillation; each message is one line that says what to do."""

from __future__ import annotations

__all__ = ["DistillError", "FeaturesError", "StageNotComposableError"]


class DistillError(ValueError):
    """Stage-wise distillation cannot run as asked (bad setting, wrong model, failed variant)."""


class FeaturesError(DistillError):
    """The stage features are missing, unreadable or were computed from something else."""


class StageNotComposableError(DistillError):
    """Running a stage's blocks one after the other does not reproduce the stage's output in the model."""
