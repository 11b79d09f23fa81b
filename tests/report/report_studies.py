"""Real Optuna studies in a study directory, filled the way ``pdenas search`` fills them (test helpers).

Each study has the directory layout of the search (``config.json`` + journal ``study.log``), the study
record (:class:`pdenas.search.StudyRecord`) and trials made with ``enqueue_trial`` + ``ask``/``tell``,
recorded with :class:`pdenas.search.TrialRecord`: costs, constraints, failures and infeasible candidates.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from pdenas import CompressionPlan
from pdenas.search import FORMAT_VERSION, OBJECTIVES, StudyRecord, TrialRecord

STAGES = ("layer1", "layer2", "layer3", "layer4")
BLOCKS = 5  # resnet_tiny: 4 stages of m = 5


@dataclass(frozen=True)
class Costs:
    macs: int
    params: int
    conv_macs: int


def plan_dict(keeps: dict[str, int], globals_: dict[str, tuple[int, float]]) -> dict[str, Any]:
    stages = {}
    for stage in STAGES:
        glob = globals_.get(stage)
        stages[stage] = {
            "keep": keeps.get(stage, BLOCKS),
            "global_layer": None if glob is None else {"iterations": glob[0], "dt": glob[1]},
        }
    return CompressionPlan.from_dict({"stages": stages}).to_dict()


class StudyBuilder:
    """A study directory with a pdenas study; ``add_*`` record trials like the search does."""

    def __init__(
        self,
        directory: Path,
        *,
        model: str = "resnet_tiny",
        objectives: tuple[str, ...] = ("accuracy", "macs"),
        original: Costs | None = None,
        max_macs: float | None = None,
        study_name: str = "pdenas",
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        self.directory = directory
        self.objectives = objectives
        self.max_macs = max_macs
        directory.mkdir(parents=True, exist_ok=True)
        search = {
            "model": model,
            "dataset": "digits",
            "trials": 30,
            "seed": 0,
            "source": "search_spaces/default.yaml",
            "budget": {"epochs": 6, "batch_size": 64},
            "objectives": list(objectives),
            "constraints": {"max_macs": max_macs, "max_params": None},
            "sampler": {"name": "tpe", "seed": None, "startup_trials": 6},
            **(extra_config or {}),
        }
        config = {"format": FORMAT_VERSION, "storage": None, "study_name": study_name, "search": search}
        (directory / "config.json").write_text(json.dumps(config, indent=2))
        storage = JournalStorage(JournalFileBackend(str(directory / "study.log")))
        self.study = optuna.create_study(
            storage=storage, study_name=study_name, directions=[OBJECTIVES[o] for o in objectives]
        )
        costs = {} if original is None else {"params": original.params, "macs": original.macs, "conv_macs": original.conv_macs}
        StudyRecord.write(
            self.study, config=search, versions={"pdenas": "0.1.0", "torch": "2.14.1", "optuna": optuna.__version__},
            original=costs,
        )

    # ---------------------------------------------------------------------------------- trials

    def add_reference(
        self, *, accuracy: float, costs: Costs, latency_ms: float | None = None, wall_time: float | None = None
    ) -> int:
        self.study.enqueue_trial({}, user_attrs=TrialRecord.attrs(reference=True))
        return self._run(
            params={}, plan=plan_dict({}, {}), accuracy=accuracy, costs=costs, latency_ms=latency_ms, train_time=42.0,
            wall_time=wall_time,
        )

    def add_candidate(
        self,
        *,
        keeps: dict[str, int],
        globals_: dict[str, tuple[int, float]] | None = None,
        accuracy: float,
        costs: Costs,
        latency_ms: float | None = None,
        train_time: float = 30.0,
        plan_text: str | None = "",
        reused_from: int | None = None,
        wall_time: float | None = None,
    ) -> int:
        globals_ = globals_ or {}
        params: dict[str, Any] = {}
        for stage in STAGES:
            params[f"{stage}.keep"] = keeps.get(stage, BLOCKS)
            params[f"{stage}.global"] = stage in globals_
            if stage in globals_:
                params[f"{stage}.iterations"], params[f"{stage}.dt"] = globals_[stage]
        return self._run(
            params=params, plan=plan_dict(keeps, globals_), accuracy=accuracy, costs=costs, latency_ms=latency_ms,
            train_time=train_time, plan_text=plan_text, reused_from=reused_from, wall_time=wall_time,
        )

    def add_failure(self, reason: str) -> int:
        trial = self.study.ask()
        trial.suggest_int("layer1.keep", 1, BLOCKS)
        TrialRecord.write(trial, failure=reason)
        self.study.tell(trial, state=TrialState.FAIL)
        return trial.number

    def add_stopped(self, *, wall_time: float) -> int:
        """A trial successive halving stopped at a rung (told PRUNED with the seconds it ran)."""
        trial = self.study.ask()
        trial.suggest_int("layer1.keep", 1, BLOCKS)
        TrialRecord.write(trial, wall_time=wall_time)
        self.study.tell(trial, state=TrialState.PRUNED)
        return trial.number

    def add_running(self) -> int:
        """A trial a worker is still training (asked, never told)."""
        trial = self.study.ask()
        trial.suggest_int("layer1.keep", 1, BLOCKS)
        return trial.number

    def _run(
        self, *, params: dict[str, Any], plan: dict[str, Any], accuracy: float, costs: Costs,
        latency_ms: float | None, train_time: float, plan_text: str | None = "", reused_from: int | None = None,
        wall_time: float | None = None,
    ) -> int:
        if params:
            self.study.enqueue_trial(params)
        trial = self.study.ask()
        for name in params:  # the search suggests; the enqueued values come back
            stage, choice = name.split(".")
            if choice == "keep":
                trial.suggest_int(name, 1, BLOCKS)
            elif choice == "global":
                trial.suggest_categorical(name, [True, False])
            elif choice == "iterations":
                trial.suggest_int(name, 1, 5)
            else:
                trial.suggest_float(name, 0.05, 0.5, log=True)
        text = plan_text or CompressionPlan.from_dict(plan).describe() if plan_text is not None else None
        TrialRecord.write(trial, plan=plan, plan_text=text, seed=0, macs=costs.macs, conv_macs=costs.conv_macs,
                          params=costs.params, latency_ms=latency_ms, wall_time=wall_time)
        feasible = True
        if self.max_macs is not None:
            trial.set_constraint("max_macs", float(costs.macs - self.max_macs))
            feasible = costs.macs <= self.max_macs
        TrialRecord.write(trial, feasible=feasible)
        if feasible:
            TrialRecord.write(trial, accuracy=accuracy, train_time=0.0 if reused_from is not None else train_time, epochs=6,
                              reused_from=reused_from)
        by_name = {"accuracy": accuracy if feasible else 0.0, "macs": costs.macs, "params": costs.params, "latency": latency_ms}
        self.study.tell(trial, [float(by_name[o]) for o in self.objectives])
        return trial.number


def synthetic_costs(original: Costs, keeps: dict[str, int], globals_: dict[str, tuple[int, float]]) -> Costs:
    """Costs of a plan derived from the original's: each stage a quarter, scaled by the blocks kept."""
    fraction = 0.08
    for stage in STAGES:
        share = keeps.get(stage, BLOCKS) / BLOCKS
        if stage in globals_:
            share += 0.02 * globals_[stage][0]  # the solver's iterations cost MACs too
        fraction += 0.23 * share
    return Costs(int(original.macs * fraction), int(original.params * (0.1 + 0.9 * fraction)), int(original.conv_macs * fraction))
