"""Which objectives a pdenas study optimises, in the order of its values."""

from __future__ import annotations

from collections.abc import Sequence

import optuna

from ..search import StudyRecord
from ._errors import ReportError

__all__ = ["study_objectives", "primary_cost", "ACCURACY"]

ACCURACY = "accuracy"


def study_objectives(study: optuna.Study, record: StudyRecord) -> tuple[str, ...]:
    """Objective names in the order of ``trial.values`` (the configuration's, else the metric names)."""
    objectives = record.objectives
    if objectives is None:
        raise ReportError(
            f"study {study.study_name!r} names no objectives (no pdenas configuration nor metric names): it was "
            "not created by pdenas search; report a study that pdenas search made"
        )
    if len(objectives) != len(study.directions):
        raise ReportError(
            f"study {study.study_name!r} lists {len(objectives)} objectives {list(objectives)} but optimises "
            f"{len(study.directions)} values: its configuration is inconsistent; rerun pdenas search"
        )
    return objectives


def primary_cost(objectives: Sequence[str]) -> str | None:
    """The first objective that is a cost (MACs by default): the x axis of "smallest" and of the knee."""
    return next((name for name in objectives if name != ACCURACY), None)
