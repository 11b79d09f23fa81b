"""Hyperparameter importances for each objective (Optuna's default evaluator, PED-ANOVA), or why not.

Only feasible completed trials count: an infeasible candidate was never trained and its recorded
accuracy is a placeholder. PED-ANOVA treats lower as better, so maximised objectives are negated. It
compares the top quantile of trials with all of them and its documentation advises at least 5 trials in
that top quantile, so the quantile is Optuna's default 10 % only from 50 trials on, and grows (up to
half) in smaller studies. Fewer than MIN_TRIALS trials give importances that are mostly noise, so none
are shown.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from ..search import TrialRecord

__all__ = ["Importances", "MIN_TRIALS", "param_importances"]

MIN_TRIALS = 10
_TOP_TRIALS = 5  # trials PED-ANOVA should find in its top quantile


@dataclass(frozen=True)
class Importances:
    """Per objective, {parameter: importance} (each sums to 1); or the reason there are none."""

    by_objective: dict[str, dict[str, float]] = field(default_factory=dict)
    reason: str | None = None


def param_importances(
    study: optuna.Study, objectives: Sequence[str], records: Sequence[TrialRecord], *, min_trials: int = MIN_TRIALS
) -> Importances:
    """``records``: the study's trials, in the order of ``study.get_trials()``."""
    feasible = {r.number for r in records if r.complete and r.feasible}
    trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.number in feasible]
    if len(trials) < min_trials:
        return Importances(
            reason=(
                f"Importances need at least {min_trials} feasible completed trials and this study has "
                f"{len(trials)}; run more trials to see which choices matter."
            )
        )
    varying = {name for t in trials for name in t.params if len({repr(o.params.get(name)) for o in trials}) > 1}
    if not varying:
        return Importances(reason="No search parameter varies across the completed trials, so none can matter more than another.")
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created in memory" line
    try:
        feasible_only = optuna.create_study(directions=study.directions, study_name=f"{study.study_name} (feasible)")
    finally:
        optuna.logging.set_verbosity(verbosity)
    feasible_only.add_trials(trials)
    evaluator = optuna.importance.PedAnovaImportanceEvaluator(target_quantile=min(0.5, max(0.1, _TOP_TRIALS / len(trials))))
    result: dict[str, dict[str, float]] = {}
    for index, (name, direction) in enumerate(zip(objectives, study.directions, strict=True)):
        sign = -1.0 if direction == StudyDirection.MAXIMIZE else 1.0
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result[name] = optuna.importance.get_param_importances(
                    feasible_only, evaluator=evaluator, target=_target(index, sign)
                )
        except (ValueError, RuntimeError) as err:
            return Importances(reason=f"Optuna could not compute importances for {name}: {' '.join(str(err).split())}")
    return Importances(by_objective=result)


def _target(index: int, sign: float) -> Callable[[FrozenTrial], float]:
    def target(trial: FrozenTrial) -> float:
        return sign * float(trial.values[index])

    return target
