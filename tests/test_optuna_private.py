"""Optuna's private API as pdenas uses it (``pdenas._optuna``, the one module that touches it): each
piece checked on real storages, so that an Optuna release that changes one fails here, by name."""

from __future__ import annotations

import ast
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from pdenas import _optuna as private

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
    pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning"),
]


def test_only_pdenas_optuna_imports_private_optuna_modules():
    offenders = []
    for path in sorted((ROOT / "pdenas").rglob("*.py")):
        if path.name == "_optuna.py" and path.parent.name == "pdenas":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in getattr(node, "names", [])] if isinstance(node, ast.Import) else []
            if any(name.startswith("optuna") and any(part.startswith("_") for part in name.split(".")) for name in names):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            if isinstance(node, ast.Attribute) and node.attr in ("_storage", "_trial_id", "_study_id", "_backend", "_max_retry"):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} .{node.attr}")
    assert offenders == []


def _sqlite(tmp_path: Path, **options) -> RDBStorage:
    return RDBStorage(f"sqlite:///{tmp_path / 'db.sqlite3'}", **options)


def test_study_and_trial_ids_and_the_stored_trial(tmp_path):
    study = optuna.create_study(storage=_sqlite(tmp_path), directions=["maximize", "minimize"])
    trial = study.ask()
    storage = private.storage_of(study)
    assert isinstance(storage, optuna.storages.BaseStorage)
    assert isinstance(private.backend_of(storage), RDBStorage)  # Optuna caches around an RDB storage
    assert private.study_id(study) == storage.get_study_id_from_name(study.study_name)
    assert storage.get_trial_number_from_id(private.trial_id(trial)) == trial.number
    trial.set_user_attr("x", 1)
    frozen = private.frozen_trial(study, trial)
    assert frozen.number == trial.number and frozen.user_attrs == {"x": 1}
    assert private.trial_id(frozen) == private.trial_id(trial)
    assert private.backend_of(optuna.storages.InMemoryStorage()).__class__ is optuna.storages.InMemoryStorage


def test_heartbeats_stale_and_silent_trials(tmp_path):
    storage = _sqlite(tmp_path, heartbeat_interval=1, grace_period=1)
    assert private.is_heartbeat_enabled(storage) and isinstance(storage, private.BaseHeartbeat)
    assert not private.is_heartbeat_enabled(optuna.storages.InMemoryStorage())
    study = optuna.create_study(storage=storage)
    beating, silent = study.ask(), study.ask()
    storage.record_heartbeat(private.trial_id(beating))
    study_id = private.study_id(study)
    assert private.running_trials_without_heartbeat(storage.engine, study_id) == {private.trial_id(silent)}
    time.sleep(2.1)
    assert private.stale_trial_ids(storage, study_id) == [private.trial_id(beating)]
    for name in private.RDB_PRIVATE_METHODS:
        assert callable(getattr(RDBStorage, name)), name


def test_constraint_and_retry_system_attributes(tmp_path):
    study = optuna.create_study(storage=_sqlite(tmp_path), directions=["maximize", "minimize"])
    study.enqueue_trial({"x": 1})
    trial = study.ask()
    trial.suggest_int("x", 0, 2)
    trial.set_constraint("max_macs", 3.0)
    frozen = private.frozen_trial(study, trial)
    assert private.is_enqueued(frozen) and not private.is_enqueued(private.frozen_trial(study, study.ask()))
    assert frozen.constraints == {"max_macs": 3.0}
    kept = private.without_constraints({**frozen.system_attrs, "constraints": [1.0]})
    assert optuna.trial.create_trial(state=TrialState.WAITING, system_attrs=kept).constraints == {}

    # Optuna's own retry callback writes the history our helpers read, and keeps the constraints we drop
    RetryHeartbeatStaleTrialCallback()(study, frozen)
    retry = study.trials[-1]
    assert RetryHeartbeatStaleTrialCallback.retry_history(retry) == [frozen.number]
    assert private.retried_trial(retry) == frozen.number and private.retries_so_far(retry) == 1
    assert retry.constraints == {"max_macs": 3.0}  # Optuna carries them over: pdenas must not
    ours = private.retry_system_attrs(retry)
    assert optuna.trial.create_trial(state=TrialState.WAITING, system_attrs=ours).constraints == {}
    assert ours["retry_history"] == [frozen.number, retry.number] and ours["failed_trial"] == frozen.number
    assert private.retried_trial(private.frozen_trial(study, trial)) is None


def test_pareto_flags_match_optuna_best_trials():
    rng = np.random.default_rng(0)
    points = rng.random((40, 2))
    study = optuna.create_study(directions=["minimize", "minimize"])
    for point in points:
        study.add_trial(optuna.trial.create_trial(values=list(point)))
    flags = private.pareto_flags(points)
    assert {i for i, flag in enumerate(flags) if flag} == {t.number for t in study.best_trials}


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_hypervolume_history_info():
    study = optuna.create_study(directions=["maximize", "minimize"])
    for accuracy, macs in ((0.5, 4.0), (0.8, 2.0), (0.6, 3.0)):
        study.add_trial(optuna.trial.create_trial(values=[accuracy, macs]))
    info = private.hypervolume_history_info(study, np.array([0.0, 5.0]))
    assert list(info.trial_numbers) == [0, 1, 2]
    # in the minimisation space: (-0.5, 4) then (-0.8, 2) dominating it, against the reference (0, 5)
    assert list(info.values) == pytest.approx([0.5, 0.8 * 3.0, 0.8 * 3.0])


def test_non_dominated_sort_and_crowding_distance():
    loss = np.array([[1.0, 1.0], [2.0, 2.0], [0.0, 3.0], [3.0, 0.0]])
    assert private.nondomination_ranks(loss) == [0, 1, 0, 0]
    front = loss[[0, 2, 3]]  # sorted per objective: the ends are inf, (1, 1) gets (3-0)/3 + (3-0)/3
    assert private.crowding_distances(front) == [2.0, float("inf"), float("inf")]


def test_plan_gp_sampler_models_the_trials_with_parameters(tmp_path):
    study = optuna.create_study(storage=_sqlite(tmp_path), directions=["maximize", "minimize"])
    study.add_trial(optuna.trial.create_trial(values=[1.0, 10.0]))  # like pdenas' original: no parameters
    for x in range(4):
        study.add_trial(optuna.trial.create_trial(params={"x": x, "c": "ab"[x % 2]}, values=[x / 4, float(x)],
                                                  distributions={"x": optuna.distributions.IntDistribution(0, 5),
                                                                 "c": optuna.distributions.CategoricalDistribution(["a", "b"])}))
    trial = study.ask()
    stock = optuna.samplers.GPSampler(seed=0, n_startup_trials=2)
    assert stock.infer_relative_search_space(study, trial) == {}  # why pdenas needs its own
    sampler = private.PlanGPSampler(seed=0, n_startup_trials=2)
    space = sampler.infer_relative_search_space(study, trial)
    assert set(space) == {"x", "c"}
    params = sampler.sample_relative(study, trial, space)
    assert set(params) == {"x", "c"} and 0 <= params["x"] <= 5
