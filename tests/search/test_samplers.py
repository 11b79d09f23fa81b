"""Every sampler of ``sampler.name`` runs a tiny real search past its random start (issue 15 item 3), with
its settings shown in the report's settings; a wrong sampler setting is one line."""

from __future__ import annotations

import optuna
import pytest
import torch
from optuna.trial import TrialState

from pdenas.report import build_report_data
from pdenas.search import SearchConfig, SearchConfigError, StudyLocation, TrialRecord, create_or_load_study, open_storage, search
from pdenas.search._config import SAMPLERS

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning", "ignore::UserWarning")

EXPECTED = {"tpe": optuna.samplers.TPESampler, "nsga2": optuna.samplers.NSGAIISampler, "gp": optuna.samplers.GPSampler,
            "random": optuna.samplers.RandomSampler}


def test_every_sampler_is_covered():
    assert set(SAMPLERS) == set(EXPECTED)


@pytest.mark.parametrize("name", SAMPLERS)
def test_each_sampler_runs_a_tiny_search(name, tiny_yaml, tmp_path):
    torch.set_num_threads(1)
    # trial 0 (the original) and one plan at random, then one from the sampler's model (NSGA-II: a generation of 2)
    path = tiny_yaml(trials=4, subset=120)
    text = path.read_text().replace("sampler:\n  name: random\n", f"sampler:\n  name: {name}\n  startup_trials: 1\n  population: 2\n")
    path.write_text(text)
    config = SearchConfig.from_yaml(path)
    location = StudyLocation(tmp_path / "study")
    search(config, location=location)
    study = optuna.load_study(study_name=location.study_name, storage=open_storage(location))
    done = [TrialRecord.from_trial(t) for t in study.get_trials(states=(TrialState.COMPLETE,))]
    assert len(done) == 4 and all(r.accuracy is not None or not r.feasible for r in done)
    loaded, _ = create_or_load_study(location, config, None)
    assert isinstance(loaded.sampler, EXPECTED[name])
    if name in ("tpe", "gp"):  # they model the plans' parameters together (the original's trial, with none, does not empty that)
        assert loaded.sampler.infer_relative_search_space(study, study.trials[-1])
    settings = dict(build_report_data(study, study_dir=location.directory, importances=False).settings)
    assert f"name: {name}" in settings["sampler"] and "startup_trials: 1" in settings["sampler"] and "population: 2" in settings["sampler"]


@pytest.mark.parametrize("extra, message", [
    ("sampler:\n  name: tpee\n", "'sampler.name' must be tpe, nsga2, gp or random, got 'tpee' (did you mean 'tpe'?)"),
    ("sampler:\n  name: gp\n  population: 1\n", "'sampler.population' must be >= 2"),
    ("sampler:\n  name: gp\n  startup_trials: -1\n", "'sampler.startup_trials' must be >= 0"),
])
def test_bad_sampler_settings_are_one_line(tiny_yaml, extra, message):
    path = tiny_yaml()
    path.write_text(path.read_text().replace("sampler:\n  name: random\n", extra))
    with pytest.raises(SearchConfigError) as err:
        SearchConfig.from_yaml(path)
    assert message in str(err.value) and "\n" not in str(err.value)
