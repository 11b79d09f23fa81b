"""Every use of Optuna's private API in pdenas, in one place; ``tests/test_optuna_private.py`` fails when
an Optuna release changes any of them.

Public Optuna has no equivalent for these: a study's storage and ids (pdenas runs its own ask/tell loop
with heartbeats, and writes to trials it does not run), the heartbeat machinery of a storage, the
system attributes that hold constraints and retry histories, Optuna's non-dominated sort and NSGA-II's
crowding distance (successive halving ranks a rung's trials with them), the hypervolume history
behind ``plot_hypervolume_history``, and GPSampler's model fitting on a chosen set of trials
(:class:`PlanGPSampler`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna
from optuna.storages import BaseStorage
from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled
from optuna.samplers.nsgaii._elite_population_selection_strategy import _calc_crowding_distance
from optuna.study._multi_objective import _fast_non_domination_rank, _is_pareto_front
from optuna.trial import FrozenTrial, TrialState, create_trial
from optuna.visualization._hypervolume_history import _get_hypervolume_history_info

__all__ = [
    "PlanGPSampler",
    "RDB_PRIVATE_METHODS",
    "BaseHeartbeat",
    "backend_of",
    "crowding_distances",
    "frozen_trial",
    "hypervolume_history_info",
    "is_enqueued",
    "is_heartbeat_enabled",
    "nondomination_ranks",
    "pareto_flags",
    "retried_trial",
    "retries_so_far",
    "retry_system_attrs",
    "running_trials_without_heartbeat",
    "stale_trial_ids",
    "storage_of",
    "study_id",
    "trial_id",
    "without_constraints",
]

# RDBStorage methods that talk to the database and are private (pdenas retries them after a dropped connection)
RDB_PRIVATE_METHODS = ("_get_trials", "_get_stale_trial_ids")

_CONSTRAINTS = "constraints"  # system attribute: a list (before Optuna 4.5), then one "constraints:<name>" per constraint
_FAILED_TRIAL = "failed_trial"  # system attributes of RetryHeartbeatStaleTrialCallback's retries
_RETRY_HISTORY = "retry_history"
_FIXED_PARAMS = "fixed_params"  # system attribute of a trial queued with enqueue_trial


# ------------------------------------------------------------------------- studies and trials


def storage_of(study: optuna.Study) -> BaseStorage:
    """The storage a study object reads and writes through (a cache around an RDB storage)."""
    return study._storage


def backend_of(storage: BaseStorage) -> BaseStorage:
    """The storage behind Optuna's cache (the ``RDBStorage`` itself), or ``storage``."""
    return getattr(storage, "_backend", storage)


def study_id(study: optuna.Study) -> int:
    return study._study_id


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The storage's id of a trial (what storage calls take; not its number)."""
    return trial._trial_id


def frozen_trial(study: optuna.Study, trial: optuna.Trial | FrozenTrial) -> FrozenTrial:
    """The trial as the storage holds it now."""
    return storage_of(study).get_trial(trial_id(trial))


# ---------------------------------------------------------------------------------- heartbeats


def stale_trial_ids(storage: BaseStorage, study: int) -> list[int]:
    """Ids of the RUNNING trials of study id ``study`` whose heartbeat is older than the grace period."""
    assert isinstance(storage, BaseHeartbeat)
    return storage._get_stale_trial_ids(study)


def running_trials_without_heartbeat(engine: Any, study: int) -> set[int]:
    """Ids of the RUNNING trials of study id ``study`` in an RDB storage that never sent a heartbeat
    (Optuna's own check skips them); a query on Optuna's tables."""
    import sqlalchemy

    query = sqlalchemy.text(
        "SELECT t.trial_id FROM trials t LEFT JOIN trial_heartbeats h ON h.trial_id = t.trial_id "
        "WHERE t.study_id = :s AND t.state = 'RUNNING' AND h.trial_id IS NULL"
    )
    with engine.connect() as conn:
        return {row[0] for row in conn.execute(query, {"s": study})}


# ------------------------------------------------------------------------ system attributes


def without_constraints(system_attrs: dict[str, Any]) -> dict[str, Any]:
    """``system_attrs`` without the constraint values (in the old list form or the per-name form)."""
    return {k: v for k, v in system_attrs.items() if k != _CONSTRAINTS and not k.startswith(f"{_CONSTRAINTS}:")}


def retries_so_far(trial: FrozenTrial) -> int:
    """How many times in a row the trial's plan has been retried before it."""
    return len(trial.system_attrs.get(_RETRY_HISTORY, []))


def retried_trial(trial: FrozenTrial) -> int | None:
    """The number of the trial that ``trial`` retries (queued by a heartbeat retry), else None."""
    history = trial.system_attrs.get(_RETRY_HISTORY) or []
    return history[-1] if history else trial.system_attrs.get(_FAILED_TRIAL)


def retry_system_attrs(trial: FrozenTrial) -> dict[str, Any]:
    """The system attributes of a trial that retries ``trial``, as Optuna's retry callback writes them,
    without the dead trial's constraint values (the retry measures its own)."""
    history = [*trial.system_attrs.get(_RETRY_HISTORY, []), trial.number]
    return {**without_constraints(trial.system_attrs), _FAILED_TRIAL: history[0], _RETRY_HISTORY: history}


def is_enqueued(trial: FrozenTrial) -> bool:
    """Whether ``trial`` was queued with fixed parameters (``enqueue_trial``)."""
    return _FIXED_PARAMS in trial.system_attrs


# ---------------------------------------------------------------------------- multi-objective


def pareto_flags(loss: np.ndarray) -> list[bool]:
    """For each row of ``loss`` (points, every column minimised), whether no other row dominates it."""
    return [bool(flag) for flag in _is_pareto_front(np.asarray(loss, dtype=float), assume_unique_lexsorted=False)]


def nondomination_ranks(loss: np.ndarray) -> list[int]:
    """For each row of ``loss`` (points, every column minimised), its front in Optuna's fast non-dominated
    sort: 0 for the Pareto front, 1 for the front once that is removed, ..."""
    return [int(rank) for rank in _fast_non_domination_rank(np.asarray(loss, dtype=float))]


def crowding_distances(loss: np.ndarray) -> list[float]:
    """For each row of ``loss``, NSGA-II's crowding distance among all rows (Optuna's: the sum over
    objectives of the gap between its two neighbours over the objective's range; inf at the ends)."""
    rows = np.asarray(loss, dtype=float)
    population = []
    for number, row in enumerate(rows):
        trial = create_trial(state=TrialState.COMPLETE, values=[float(v) for v in row])
        trial.number = number
        population.append(trial)
    distances = _calc_crowding_distance(population)
    return [float(distances[number]) for number in range(len(rows))]


class PlanGPSampler(optuna.samplers.GPSampler):
    """Optuna's GPSampler, modelling only the trials that have parameters. The original model's trial
    of a pdenas study has none (it is not a plan of the space), and Optuna's GPSampler models the
    parameters that every completed trial has: with that trial, none, and every plan would be drawn at
    random. The search space here is the intersection over the completed trials that have parameters
    (Optuna's public ``intersection_search_space``), and the model is fitted on those that have all of
    it (GPSampler's ``_sample_relative_impl``, the part of its ``sample_relative`` after it reads the
    trials)."""

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
        trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.params]
        space = optuna.search_space.intersection_search_space(trials)
        return {name: d for name, d in space.items() if not d.single()}

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, Any]) -> dict[str, Any]:
        if not search_space:
            return {}
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
        usable = [t for t in trials if search_space.keys() <= t.params.keys()]
        completed = [t for t in usable if t.state == TrialState.COMPLETE]
        running = [t for t in usable if t.state == TrialState.RUNNING]
        if len(completed) < self._n_startup_trials:
            return {}
        import torch

        with torch.device("cpu"):
            return self._sample_relative_impl(study, completed, running, search_space)


def hypervolume_history_info(study: optuna.Study, reference_point: np.ndarray) -> Any:
    """Optuna's hypervolume after each completed trial (``.trial_numbers``, ``.values``), as
    ``optuna.visualization.plot_hypervolume_history`` draws it (feasible trials only)."""
    return _get_hypervolume_history_info(study, reference_point)
