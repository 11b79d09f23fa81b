"""The trials of a study as one pandas DataFrame, a row a trial (what ``trials.csv`` holds).

Built on ``study.trials_dataframe()`` (objective columns named after the objectives, ``values_accuracy``,
as the study's metric names say); then each constraint becomes ``constraint_<name>``, ``feasible`` and
``failure`` are added from the trials' records, and dict or list values (the plan) are written as JSON
so that the CSV can be read back.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import optuna
import pandas as pd

from ..search import TrialRecord

__all__ = ["trials_frame"]

_ATTRS = ("number", "state", "values", "params", "user_attrs", "datetime_start", "datetime_complete", "duration")


def trials_frame(study: optuna.Study, objectives: Sequence[str], records: Sequence[TrialRecord]) -> pd.DataFrame:
    """``records``: the study's trials."""
    if not records:
        return pd.DataFrame(columns=["number", "state", "feasible", *(f"values_{name}" for name in objectives), "failure"])
    frame = study.trials_dataframe(attrs=_ATTRS)
    if study.metric_names is None:  # a study made before pdenas named its metrics
        frame = frame.rename(columns={f"values_{i}": f"values_{name}" for i, name in enumerate(objectives)})
    by_number = {r.number: r for r in records}
    rows = [by_number[n] for n in frame["number"]]
    frame.insert(2, "feasible", [r.feasible if r.complete else None for r in rows])
    for name in sorted({name for r in rows for name in r.constraints}):
        frame[f"constraint_{name}"] = [r.constraints.get(name) for r in rows]
    frame = frame.drop(columns=[f"user_attrs_{TrialRecord.key('failure')}"], errors="ignore")
    frame["failure"] = [r.failure for r in rows]
    for column in frame.columns:
        if frame[column].dtype == object:
            frame[column] = frame[column].map(_jsonable)
    return frame.sort_values("number", kind="stable").reset_index(drop=True)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, default=str)
    return value
