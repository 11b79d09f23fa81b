"""``--trial``: choose one trial of a study by number or by a Pareto shortcut.

Specs: a trial number (``12`` or ``"12"``), ``pareto:best-accuracy``, ``pareto:smallest`` or
``pareto:knee`` (see :mod:`._pareto` for what each picks). Only a completed, feasible trial can be
selected; anything else is a one-line :class:`ReportError` saying why and what to pick instead.
"""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from ..search import StudyRecord, TrialRecord, pareto_trials
from ._errors import ReportError
from ._objectives import study_objectives
from ._pareto import SHORTCUTS, shortcut_picks

__all__ = ["select_trial"]

_HINT = "pick a completed feasible trial, e.g. --trial pareto:knee (pdenas show DIR lists the Pareto set)"


def select_trial(study: optuna.Study, spec: str | int) -> TrialRecord:
    """The trial ``spec`` names; :class:`ReportError` for an unknown, failed, unfinished or infeasible one."""
    if isinstance(spec, str) and spec.strip().lower() in SHORTCUTS:
        return _shortcut(study, spec.strip().lower())
    number = _number(spec)
    trials = study.get_trials(deepcopy=False)
    found = next((t for t in trials if t.number == number), None)
    if found is None:
        known = f"it has trials 0-{max(t.number for t in trials)}" if trials else "it has no trials yet"
        raise ReportError(f"trial {number} does not exist in study {study.study_name!r} ({known}): {_HINT}")
    trial = TrialRecord.from_trial(found)
    if trial.state == TrialState.FAIL:
        raise ReportError(f"trial {number} failed ({trial.failure}): {_HINT}")
    if trial.state != TrialState.COMPLETE:
        raise ReportError(f"trial {number} is {trial.state.name.lower()}, not complete: wait for it to finish or {_HINT}")
    if not trial.feasible:
        broken = ", ".join(f"{name} = {value:+.3g}" for name, value in trial.constraints.items() if value > 0)
        why = f"it broke a constraint ({broken})" if broken else "it broke a constraint"
        raise ReportError(f"trial {number} is infeasible, {why}, so it was never trained: {_HINT}")
    return trial


def _number(spec: str | int) -> int:
    if isinstance(spec, bool):
        spec = str(spec)
    if isinstance(spec, int):
        return spec
    text = str(spec).strip()
    if text.isdigit():
        return int(text)
    raise ReportError(f"unknown trial {spec!r}: give a trial number or one of {', '.join(SHORTCUTS)}")


def _shortcut(study: optuna.Study, spec: str) -> TrialRecord:
    objectives = study_objectives(study, StudyRecord.from_study(study, records=[]))
    front = [TrialRecord.from_trial(t) for t in pareto_trials(study)]
    picks = shortcut_picks(front, objectives)
    if spec not in picks:
        if not front:
            why = "no feasible trial has completed yet"
        elif "accuracy" not in objectives or len(objectives) < 2:
            why = f"the study's objectives {list(objectives)} are not accuracy and a cost"
        else:
            why = "only the original model is on the Pareto front so far"
        raise ReportError(f"{spec} has nothing to choose from: {why}; run more trials (pdenas search) and retry")
    return picks[spec]
