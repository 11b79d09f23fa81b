"""Which objectives a pdenas study optimises, in the order of its values, and reading them from a trial."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from ..search import _attrs
from ._errors import ReportError

__all__ = ["study_objectives", "objective_value", "metric", "is_feasible", "is_reference", "primary_cost", "ACCURACY"]

ACCURACY = "accuracy"


def study_objectives(study: optuna.Study) -> tuple[str, ...]:
    """Objective names in the order of ``trial.values``: CONFIG["objectives"], else the metric names."""
    config = study.user_attrs.get(_attrs.CONFIG)
    names: Sequence[Any] | None = None
    if isinstance(config, Mapping) and config.get("objectives"):
        names = config["objectives"]
    elif study.metric_names is not None:
        names = study.metric_names
    if names is None:
        raise ReportError(
            f"study {study.study_name!r} names no objectives (no user attribute {_attrs.CONFIG!r} nor metric "
            "names): it was not created by pdenas search; report a study that pdenas search made"
        )
    objectives = tuple(_objective_name(name) for name in names)
    if len(objectives) != len(study.directions):
        raise ReportError(
            f"study {study.study_name!r} lists {len(objectives)} objectives {list(objectives)} but optimises "
            f"{len(study.directions)} values: its configuration is inconsistent; rerun pdenas search"
        )
    return objectives


def _objective_name(entry: Any) -> str:
    if isinstance(entry, Mapping):  # {"name": "macs", "direction": "minimize"}
        return str(entry.get("name"))
    return str(entry)


def primary_cost(objectives: Sequence[str]) -> str | None:
    """The first objective that is a cost (MACs by default): the x axis of "smallest" and of the knee."""
    return next((name for name in objectives if name != ACCURACY), None)


def objective_value(trial: FrozenTrial, name: str, objectives: Sequence[str]) -> float | None:
    """The value ``trial`` recorded for objective ``name``, or None (not an objective, or no values)."""
    if trial.values is None or name not in objectives:
        return None
    return float(trial.values[list(objectives).index(name)])


def metric(trial: FrozenTrial, name: str, objectives: Sequence[str]) -> float | None:
    """A measured quantity of ``trial`` ("accuracy", "macs", "params", "latency", ...).

    The user attribute the search stores is preferred; the objective value is the fallback. An
    infeasible trial was never trained, so its accuracy is None (its objective is a placeholder 0).
    """
    attr = _attrs.OBJECTIVE_ATTRS.get(name, name)
    value = trial.user_attrs.get(attr)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if name == ACCURACY and not is_feasible(trial):
        return None
    return objective_value(trial, name, objectives)


def is_feasible(trial: FrozenTrial) -> bool:
    """Optuna's rule (every constraint <= 0), and the search's FEASIBLE attribute not False."""
    return all(value <= 0.0 for value in trial.constraints.values()) and trial.user_attrs.get(_attrs.FEASIBLE) is not False


def is_reference(trial: FrozenTrial) -> bool:
    """Whether ``trial`` evaluated the original model (the identity plan)."""
    return trial.user_attrs.get(_attrs.REFERENCE) is True

