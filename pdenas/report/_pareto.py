"""The named picks on a study's Pareto set (:func:`pdenas.search.pareto_trials`), and the front of
accuracy against any one cost.

The picks are what ``--trial pareto:...`` selects. They choose among the compressed candidates on the
front: the original model's own trial (REFERENCE) is the yardstick, never a pick.

* ``pareto:best-accuracy``: the most accurate candidate (ties: the cheaper).
* ``pareto:smallest``: the cheapest candidate on the study's first cost objective, MACs by default
  (ties: the more accurate).
* ``pareto:knee``: the candidate nearest the ideal corner (highest accuracy, lowest cost) once both
  axes are min-max normalised over the candidates, so neither unit dominates the distance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

import numpy as np

from .._optuna import pareto_flags
from ..search import TrialRecord
from ._objectives import ACCURACY, primary_cost

__all__ = ["SHORTCUTS", "front_2d", "shortcut_picks"]

BEST_ACCURACY = "pareto:best-accuracy"
SMALLEST = "pareto:smallest"
KNEE = "pareto:knee"
SHORTCUTS = (BEST_ACCURACY, SMALLEST, KNEE)

R = TypeVar("R", bound=TrialRecord)


def front_2d(accuracy: Sequence[float], cost: Sequence[float]) -> list[bool]:
    """Which (accuracy, cost) points no other point dominates (maximise accuracy, minimise cost)."""
    if not accuracy:
        return []
    return pareto_flags(np.column_stack([-np.asarray(accuracy, dtype=float), np.asarray(cost, dtype=float)]))


def shortcut_picks(pareto: Sequence[R], objectives: Sequence[str]) -> dict[str, R]:
    """The trial each shortcut names; empty when the front holds no compressed candidate yet."""
    cost_name = primary_cost(objectives)
    if ACCURACY not in objectives or cost_name is None:
        return {}
    points = []
    for trial in pareto:
        if trial.reference:
            continue
        accuracy = trial.objective(ACCURACY, objectives)
        cost = trial.objective(cost_name, objectives)
        if accuracy is not None and cost is not None:
            points.append((trial, accuracy, cost))
    if not points:
        return {}
    best_accuracy = max(points, key=lambda p: (p[1], -p[2], -p[0].number))
    smallest = min(points, key=lambda p: (p[2], -p[1], p[0].number))
    knee = min(points, key=lambda p: (_distance_to_ideal(p[1], p[2], points), p[2], p[0].number))
    return {BEST_ACCURACY: best_accuracy[0], SMALLEST: smallest[0], KNEE: knee[0]}


def _distance_to_ideal(accuracy: float, cost: float, points: Sequence[tuple[TrialRecord, float, float]]) -> float:
    accuracies = [p[1] for p in points]
    costs = [p[2] for p in points]
    # normalised so that the ideal corner is (accuracy 1, cost 0); a flat axis contributes nothing
    acc_span = max(accuracies) - min(accuracies)
    cost_span = max(costs) - min(costs)
    acc_gap = (max(accuracies) - accuracy) / acc_span if acc_span > 0 else 0.0
    cost_gap = (cost - min(costs)) / cost_span if cost_span > 0 else 0.0
    return math.hypot(acc_gap, cost_gap)
