"""Hypervolume over trials and over compute: whether more search still pushes the front out.

Optuna computes it (``optuna.visualization``'s hypervolume history, on ``optuna._hypervolume``): for each
completed trial, the volume of objective space that the feasible trials up to it dominate, bounded by a
reference point.

Reference point (derived from the original model): accuracy 0, and for each cost objective 1.1 x the
original model's cost (its REFERENCE trial, else the study attribute ORIGINAL; only when neither knows
the cost, 1.1 x the largest feasible value seen). The 10 % margin lets the original model itself count.

The volume is reported as a fraction of the box between that reference point and the ideal corner
(accuracy 1, zero cost), so it reads 0..1 whatever the units: 0.35 means the trials so far dominate
35 % of the box.

Each point also carries the compute spent to reach it: the worker-seconds of every finished trial numbered
up to it (completed, stopped at a successive-halving rung, failed). Trials differ in cost (a stopped trial
trained a fraction of the images, a reused plan none, the first trials of a stage-wise search distil the
stages), so compute, not the trial count, is the axis on which searches and samplers compare (issue 15).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial

from .._optuna import hypervolume_history_info
from ..search import TrialRecord
from ._objectives import ACCURACY

__all__ = ["HypervolumeHistory", "REFERENCE_MARGIN", "hypervolume_history", "worker_seconds"]

REFERENCE_MARGIN = 1.1


@dataclass(frozen=True)
class HypervolumeHistory:
    """Dominated fraction of the reference box after each completed trial."""

    trial_numbers: tuple[int, ...]
    values: tuple[float, ...]  # fractions of box_volume, non-decreasing
    compute: tuple[float, ...]  # worker-seconds of the finished trials numbered up to each trial, non-decreasing
    reference_point: dict[str, float]  # objective name -> value, in the objective's units
    ideal_point: dict[str, float]
    box_volume: float  # the normaliser, in the objectives' units multiplied

    @property
    def final(self) -> float:
        return self.values[-1] if self.values else 0.0


def hypervolume_history(
    study: optuna.Study, objectives: Sequence[str], records: Sequence[TrialRecord], *,
    trials: Sequence[FrozenTrial], original_costs: Mapping[str, float | None],
) -> tuple[HypervolumeHistory | None, str | None]:
    """The history, or None with the reason it cannot be computed (``trials``: the study's trials, read
    once by the caller; ``records``: theirs)."""
    feasible = [r for r in records if r.complete and r.feasible and r.values is not None]
    if not feasible:
        return None, "No feasible trial has completed yet, so nothing dominates any volume."
    reference: dict[str, float] = {}
    ideal: dict[str, float] = {}
    for index, (name, direction) in enumerate(zip(objectives, study.directions, strict=True)):
        if direction == StudyDirection.MAXIMIZE:
            if name != ACCURACY:
                return None, f"The maximised objective {name!r} has no natural reference value (only accuracy does)."
            reference[name], ideal[name] = 0.0, 1.0
            continue
        cost = original_costs.get(name)
        if cost is None or not math.isfinite(cost) or cost <= 0:
            cost = max(t.values[index] for t in feasible)
        if not math.isfinite(cost) or cost <= 0:
            return None, f"The original model's {name} is unknown and no trial has a positive {name}."
        reference[name], ideal[name] = REFERENCE_MARGIN * cost, 0.0
    box = math.prod(abs(reference[name] - ideal[name]) for name in objectives)
    point = np.asarray([reference[name] for name in objectives], dtype=np.float64)
    info = hypervolume_history_info(study, point)
    spent = worker_seconds(trials, records)
    return (
        HypervolumeHistory(
            trial_numbers=tuple(int(n) for n in info.trial_numbers),
            values=tuple(float(v) / box for v in info.values),
            compute=tuple(spent[int(n)] for n in info.trial_numbers),
            reference_point=reference,
            ideal_point=ideal,
            box_volume=box,
        ),
        None,
    )


def worker_seconds(trials: Sequence[FrozenTrial], records: Sequence[TrialRecord]) -> dict[int, float]:
    """Trial number -> worker-seconds of every finished trial numbered up to it (running ones not counted).

    A trial's cost is its recorded ``wall_time`` (the whole trial, stage-wise step included); a trial that
    died before recording it counts Optuna's start-to-end time.
    """
    durations = {t.number: t.duration for t in trials if t.state.is_finished()}
    total, spent = 0.0, {}
    for record in sorted(records, key=lambda r: r.number):
        if record.number in durations:
            if record.wall_time is not None:
                total += record.wall_time
            elif durations[record.number] is not None:
                total += durations[record.number].total_seconds()
        spent[record.number] = total
    return spent
