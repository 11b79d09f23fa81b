"""Turning trials into plans: the dt grid gives repeatable values, and the Global layer's init is a choice."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch
import yaml

from pdenas import create_model, find_stages
from pdenas.search import SearchConfig, plan_key
from pdenas.search._suggest import select_stages, suggest_plan

DEFAULT_YAML = Path(__file__).resolve().parents[2] / "search_spaces" / "default.yaml"
STAGES = find_stages(create_model("resnet_tiny", in_channels=1), torch.zeros(2, 1, 32, 32))


def plans(space: dict, count: int, seed: int = 0) -> list:
    return plans_for(SearchConfig.from_dict({"space": space}), count, seed)


def plans_for(config: SearchConfig, count: int, seed: int = 0) -> list:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(count):
        trial = study.ask()
        out.append((trial, suggest_plan(trial, select_stages(STAGES, config.space), config.space)))
        study.tell(trial, 0.0)
    return out


def test_a_dt_step_puts_every_value_on_the_grid_exactly():
    drawn = [p.stages[s.name].global_layer.dt for _, p in plans({"global_layer": [True], "dt": {"low": 0.1, "high": 0.4, "step": 0.1}}, 30)
             for s in STAGES]
    assert set(drawn) == {0.1, 0.2, 0.3, 0.4}  # 0.30000000000000004 would make a second variant of 0.3


def test_equal_grid_choices_give_equal_plans():
    space = {"stages": ["layer1"], "global_layer": [True], "keep": {"low": 1, "high": 1}, "iterations": 1,
             "dt": {"low": 0.1, "high": 0.3, "step": 0.1}}
    keys = [plan_key(p) for _, p in plans(space, 20)]
    assert len(set(keys)) == 3  # one plan per grid point: trials repeat, and reuse each other's variants


def test_init_is_suggested_and_identity_comes_without_a_residual_choice():
    space = {"global_layer": [True], "global_init": ["random", "identity"], "residual": [False, True]}
    seen = set()
    for trial, plan in plans(space, 20):
        for stage in STAGES:
            glob = plan.stages[stage.name].global_layer
            seen.add((glob.init, glob.residual))
            assert trial.params[f"{stage.name}.init"] == glob.init
            assert (f"{stage.name}.residual" in trial.params) == (glob.init == "random")
    assert seen == {("random", False), ("random", True), ("identity", False)}


@pytest.mark.parametrize("init", ["random", "identity"])
def test_a_single_init_is_fixed_not_searched(init):
    for trial, plan in plans({"global_layer": [True], "global_init": [init]}, 3):
        assert all(plan.stages[s.name].global_layer.init == init for s in STAGES)
        assert not any(name.endswith(".init") for name in trial.params)


@pytest.mark.parametrize("source", ["SearchSpace", "default.yaml"])
def test_by_default_a_global_layer_is_inserted_as_the_identity(source):
    """The ablation's winner (issue 13 item 1) is the default, in the dataclass and in the shipped demo space."""
    data = {"space": {}} if source == "SearchSpace" else yaml.safe_load(DEFAULT_YAML.read_text())
    data["space"]["global_layer"] = [True]  # every stage gets a layer, so every stage's init is checked
    config = SearchConfig.from_dict(data)
    for trial, plan in plans_for(config, 5):
        assert all(plan.stages[s.name].global_layer.init == "identity" for s in STAGES)
        assert not any(name.endswith(".init") for name in trial.params)
