"""The trials of a study as one pandas DataFrame, a row a trial (what ``trials.csv`` holds).

Built on ``study.trials_dataframe()``; then objective columns are named after the objectives
(``values_accuracy``), Optuna's constraint system attributes become ``constraint_<name>``, its other
internal system attributes are dropped, ``feasible`` and ``failure`` are added, and dict or list
values (the plan) are written as JSON so that the CSV can be read back.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

from ..search import _attrs
from ._objectives import is_feasible

__all__ = ["trials_frame"]

_ATTRS = ("number", "state", "values", "params", "user_attrs", "system_attrs", "datetime_start", "datetime_complete", "duration")
_CONSTRAINT_PREFIX = "system_attrs_constraints:"
_FAILURE = f"user_attrs_{_attrs.FAILURE}"


def trials_frame(study: optuna.Study, objectives: Sequence[str]) -> pd.DataFrame:
    trials = study.get_trials(deepcopy=False)
    if not trials:
        return pd.DataFrame(columns=["number", "state", "feasible", *(f"values_{name}" for name in objectives), "failure"])
    frame = study.trials_dataframe(attrs=_ATTRS)
    if study.metric_names is None:
        frame = frame.rename(columns={f"values_{i}": f"values_{name}" for i, name in enumerate(objectives)})
    renames = {c: "constraint_" + c[len(_CONSTRAINT_PREFIX):] for c in frame.columns if c.startswith(_CONSTRAINT_PREFIX)}
    frame = frame.rename(columns=renames)
    frame = frame.drop(columns=[c for c in frame.columns if c.startswith("system_attrs_")])
    by_number = {t.number: t for t in trials}
    frame.insert(2, "feasible", [_feasible(by_number[n]) for n in frame["number"]])
    if _FAILURE in frame.columns:
        frame = frame.rename(columns={_FAILURE: "failure"})
    else:
        frame["failure"] = None
    for column in frame.columns:
        if frame[column].dtype == object:
            frame[column] = frame[column].map(_jsonable)
    return frame.sort_values("number", kind="stable").reset_index(drop=True)


def _feasible(trial: optuna.trial.FrozenTrial) -> bool | None:
    return is_feasible(trial) if trial.state == TrialState.COMPLETE else None


def _jsonable(value: Any) -> Any:
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, default=str)
    return value
