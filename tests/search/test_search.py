"""The search end to end, with real training on real data and a real Optuna storage on disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from pdenas import create_model
from pdenas.search import SearchConfig, StudyLocation, StudyRecord, TrialRecord, open_storage, plan_key, run_worker, search

from .conftest import pdenas_cmd, run_pdenas

record = TrialRecord.from_trial


def load(directory: Path) -> optuna.Study:
    return optuna.load_study(study_name="pdenas", storage=open_storage(StudyLocation(directory)))


def completed(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def test_search_records_everything_and_trial_zero_is_the_original(tiny_yaml, tmp_path):
    space = SearchConfig.from_yaml(tiny_yaml(trials=3))
    result = search(space, location=StudyLocation(tmp_path / "study"))
    assert result.completed == 3
    study = load(tmp_path / "study")
    trials = completed(study)
    assert len(trials) == 3
    ref = study.trials[0]
    assert record(ref).reference is True
    assert record(ref).plan_text == "layer1: untouched; layer2: untouched; layer3: untouched; layer4: untouched"
    original = StudyRecord.from_study(study).original
    assert original.trial_number == 0 and original.accuracy == record(ref).accuracy
    assert record(ref).macs == original.macs and record(ref).params == original.params
    for t in trials:
        for name in ("plan", "plan_text", "accuracy", "macs", "conv_macs", "params", "train_time", "epochs", "seed"):
            assert getattr(record(t), name) is not None, (t.number, name)
        assert 0 <= record(t).accuracy <= 1
        assert t.values == [record(t).accuracy, record(t).macs]
    assert StudyRecord.from_study(study).config["model"] == "resnet_tiny"
    assert study.metric_names == ["accuracy", "macs"]  # Optuna's own tools name the objectives
    assert {"values_accuracy", "values_macs"} <= set(study.trials_dataframe().columns)
    config = json.loads((tmp_path / "study" / "config.json").read_text())
    assert config["search"]["budget"]["subset"] == 240 and config["study_name"] == "pdenas"


def test_identical_plans_are_not_trained_twice(tiny_yaml, tmp_path):
    extra = "constraints: {}\n"
    path = tiny_yaml(trials=3)
    text = path.read_text().replace("global_layer: [true, false]", "global_layer: [false]").replace(
        "keep: {low: 1, high: 2}", "keep: {low: 1, high: 1}"
    ).replace("stages: all", "stages: [layer1]")
    path.write_text(text + extra)
    search(SearchConfig.from_yaml(path), location=StudyLocation(tmp_path / "s"))
    trials = completed(load(tmp_path / "s"))
    assert len(trials) == 3
    assert plan_key(record(trials[1]).plan) == plan_key(record(trials[2]).plan)
    assert record(trials[2]).reused_from == 1
    assert record(trials[2]).accuracy == record(trials[1]).accuracy


def test_constraint_violations_are_recorded_untrained(tiny_yaml, tmp_path):
    path = tiny_yaml(trials=4, extra="constraints:\n  max_macs: 0.55\n")
    search(SearchConfig.from_yaml(path), location=StudyLocation(tmp_path / "s"))
    study = load(tmp_path / "s")
    trials = completed(study)
    ref = trials[0]
    # the original breaks the limit but is trained anyway: it is the report's reference point
    assert record(ref).feasible is False and record(ref).accuracy is not None
    assert ref.constraints["max_macs"] > 0
    limit = 0.55 * StudyRecord.from_study(study).original.macs
    for t in trials[1:]:
        assert record(t).feasible == (record(t).macs <= limit)
        assert (record(t).accuracy is not None) == record(t).feasible
    assert all(record(t).feasible for t in study.best_trials)


def test_impossible_budget_is_refused_before_anything_starts(tiny_yaml, tmp_path):
    path = tiny_yaml(extra="constraints:\n  max_macs: 1000\n")
    proc = run_pdenas("search", "--config", str(path), "--study-dir", str(tmp_path / "s"))
    assert proc.returncode == 2
    assert "'constraints.max_macs' = 1,000 is impossible" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "s" / "study.log").exists()


def test_diverging_candidates_fail_with_the_reason_and_the_search_goes_on(tiny_yaml, tmp_path):
    """The original is given (trial 0 scores it as it is); every candidate's fine-tuning diverges."""
    torch.save(create_model("resnet_tiny", in_channels=1).state_dict(), tmp_path / "w.pt")
    path = tiny_yaml(trials=3, extra=f"weights: {tmp_path / 'w.pt'}\n")
    path.write_text(path.read_text().replace("lr: 0.05", "lr: 1.0e+8"))
    counts = run_worker(StudyLocation(tmp_path / "s"), SearchConfig.from_yaml(path), max_failures=2)
    assert (counts.completed, counts.failed) == (1, 2)
    failed = load(tmp_path / "s").get_trials(states=(TrialState.FAIL,))
    assert len(failed) == 2
    assert all("TrainingDiverged" in record(t).failure or "diverged" in record(t).failure for t in failed)


def test_an_original_that_cannot_be_trained_stops_the_search_with_one_line(tiny_yaml, tmp_path):
    """Without ``weights`` every candidate compresses what trial 0 trains: when that diverges, the next
    trial is failed with the reason and the search stops, in one line, instead of failing every trial."""
    path = tiny_yaml(trials=3)
    path.write_text(path.read_text().replace("lr: 0.05", "lr: 1.0e+8"))
    proc = run_pdenas("search", "--config", str(path), "--study-dir", str(tmp_path / "s"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = proc.stderr.strip()
    assert line.startswith("pdenas: error: the original model's trial (0) failed (TrainingDiverged: ") and "\n" not in line
    assert line.endswith("every candidate compresses what it trains: fix the cause (e.g. budget.lr) and start a new "
                         "study, or pass --weights")
    states = [t.state for t in load(tmp_path / "s").trials]
    assert states == [TrialState.FAIL, TrialState.FAIL]  # the original, and the trial that needed it


def test_a_different_model_against_an_existing_study_is_refused(tiny_yaml, tmp_path):
    path = tiny_yaml(trials=1)
    assert run_pdenas("search", "--config", str(path), "--study-dir", str(tmp_path / "s")).returncode == 0
    proc = run_pdenas("search", "--config", str(path), "--study-dir", str(tmp_path / "s"), "--model", "resnet20", "--trials", "2")
    assert proc.returncode == 2
    assert "created with different settings (model: 'resnet_tiny' -> 'resnet20')" in proc.stderr
    assert len(load(tmp_path / "s").trials) == 1


def test_more_trials_extend_the_study(tiny_yaml, tmp_path):
    path = tiny_yaml(trials=2)
    assert run_pdenas("search", "--config", str(path), "--study-dir", str(tmp_path / "s")).returncode == 0
    before = {t.number: t.values for t in completed(load(tmp_path / "s"))}
    proc = run_pdenas("search", "--config", str(path), "--study-dir", str(tmp_path / "s"), "--trials", "3")
    assert proc.returncode == 0, proc.stderr
    after = {t.number: t.values for t in completed(load(tmp_path / "s"))}
    assert len(after) == 3 and all(after[n] == v for n, v in before.items())


def _wait_for_training(directory: Path, proc: subprocess.Popen, *, min_number: int, timeout: float = 240) -> int:
    """The number of a trial that is RUNNING and training, once one is."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the search ended before it could be interrupted"
        if (directory / "study.log").exists():
            try:
                study = load(directory)
            except Exception:
                time.sleep(0.2)
                continue
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if t.number >= min_number and record(t).progress is not None:
                    return t.number
        time.sleep(0.2)
    raise AssertionError("no trial started training in time")


def test_kill_9_in_the_middle_of_a_trial_then_resume(tiny_yaml, tmp_path):
    path = tiny_yaml(trials=3, epochs=2)
    directory = tmp_path / "s"
    args = ["search", "--config", str(path), "--study-dir", str(directory)]
    proc = subprocess.Popen(pdenas_cmd(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    try:
        victim = _wait_for_training(directory, proc, min_number=1)
        done_before = {t.number: (t.values, record(t).plan) for t in completed(load(directory))}
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    study = load(directory)
    killed = study.trials[victim]
    assert killed.state == TrialState.RUNNING  # nothing could record the death
    resumed = run_pdenas(*args, timeout=900)
    assert resumed.returncode == 0, resumed.stderr
    study = load(directory)
    trials = completed(study)
    assert len(trials) == 3
    killed = study.trials[victim]
    assert killed.state == TrialState.FAIL and "died" in record(killed).failure
    retries = [t for t in study.trials if record(t).retry_of == victim]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == killed.params
    for number, (values, plan) in done_before.items():
        assert study.trials[number].state == TrialState.COMPLETE
        assert study.trials[number].values == values and record(study.trials[number]).plan == plan


def test_ctrl_c_marks_the_trial_and_the_next_run_resumes(tiny_yaml, tmp_path):
    path = tiny_yaml(trials=2, epochs=2)
    directory = tmp_path / "s"
    args = ["search", "--config", str(path), "--study-dir", str(directory)]
    proc = subprocess.Popen(pdenas_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    victim = _wait_for_training(directory, proc, min_number=0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "run the same command again to resume" in out
    study = load(directory)
    assert study.trials[victim].state == TrialState.FAIL
    assert "interrupted" in record(study.trials[victim]).failure
    assert run_pdenas(*args, timeout=900).returncode == 0
    study = load(directory)
    assert len(completed(study)) == 2
    assert any(record(t).retry_of == victim and t.state == TrialState.COMPLETE for t in study.trials)


def test_two_workers_share_one_study(tiny_yaml, tmp_path):
    path = tiny_yaml(trials=5)
    directory = tmp_path / "s"
    proc = run_pdenas("search", "--config", str(path), "--study-dir", str(directory), "--workers", "2", timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert "locked" not in proc.stderr + proc.stdout
    study = load(directory)
    trials = completed(study)
    assert len(trials) == 5
    # a trial asked for after the target was reached is pruned before any worker takes it
    workers = {record(t).worker for t in study.trials if record(t).worker is not None}
    assert len(workers) == 2
    assert all(record(t).worker is not None for t in trials)
    trained = [plan_key(record(t).plan) for t in trials if record(t).reused_from is None]
    assert len(trained) == len(set(trained))


def test_a_second_search_on_a_running_study_dir_is_refused(tiny_yaml, tmp_path):
    path = tiny_yaml(trials=2, epochs=3)
    directory = tmp_path / "s"
    args = ["search", "--config", str(path), "--study-dir", str(directory)]
    proc = subprocess.Popen(pdenas_cmd(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_training(directory, proc, min_number=0)
        second = run_pdenas(*args)
        assert second.returncode == 2
        assert "is in use by a running pdenas search" in second.stderr
    finally:
        proc.kill()
        proc.wait()


def test_a_study_on_a_server_gets_a_study_folder_from_the_search_package(tmp_path):
    """``pdenas report --storage URL`` works from any machine: ``link_study_dir`` writes the folder's
    config.json (the search's format, mode 600: the URL may hold a password) pointing at the study."""
    from pdenas.search import StudyError, StudyRecord, link_study_dir, read_config

    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    study = optuna.create_study(storage=url, study_name="shared", directions=["maximize", "minimize"])
    config = SearchConfig(trials=4).to_dict()
    StudyRecord.write(study, config=config, versions={}, original={})
    location = link_study_dir(tmp_path / "here", url, "shared")
    written = read_config(location.directory)
    assert (written["storage"], written["study_name"], written["search"]) == (url, "shared", config)
    assert oct((location.config_path).stat().st_mode & 0o777) == "0o600"
    assert link_study_dir(tmp_path / "here", url, "shared") == location  # already pointing there
    with pytest.raises(StudyError, match="already holds study 'shared'"):
        link_study_dir(tmp_path / "here", url, "other")
    with pytest.raises(StudyError, match="there is no study 'nope'"):
        link_study_dir(tmp_path / "elsewhere", url, "nope")
    assert not (tmp_path / "elsewhere").exists()
