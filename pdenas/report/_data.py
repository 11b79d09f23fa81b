"""Everything the report shows, computed once from a study: the data that the figures, the page,
the CSV files and the terminal table only draw.

``build_report_data(study)`` reads the attributes that the search stores (``pdenas.search._attrs``),
summarises every trial, takes the Pareto set from Optuna (feasible completed trials only), sorts it by
MACs with ratios to the original model, and adds the hypervolume history, the importances and the
study's settings.

The original model is the completed trial marked REFERENCE; its costs fall back to the study attribute
ORIGINAL. Ratios read "how many times smaller" (original / candidate), so 4.58x means a candidate with
a 4.58th of the original's MACs; the accuracy change is candidate minus original.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from ..search import _attrs
from ._frame import trials_frame
from ._hypervolume import HypervolumeHistory, hypervolume_history
from ._importances import Importances, param_importances
from ._objectives import ACCURACY, is_feasible, is_reference, metric, study_objectives
from ._pareto import SHORTCUTS, front_2d, pareto_set, shortcut_picks
from ._plan_text import plan_text
from ._settings import model_name, study_settings
from ._study_dir import locate_study

__all__ = ["Original", "TrialSummary", "Front", "ReportData", "build_report_data", "COSTS"]

# the costs drawn against accuracy, with their labels
COSTS: dict[str, str] = {"macs": "MACs", "params": "parameters", "latency": "latency (ms)"}


@dataclass(frozen=True)
class Original:
    """The model before compression (trial marked REFERENCE, costs falling back to ORIGINAL)."""

    trial_number: int | None
    accuracy: float | None
    macs: float | None
    params: float | None
    conv_macs: float | None
    latency_ms: float | None

    def cost(self, name: str) -> float | None:
        return {"macs": self.macs, "params": self.params, "latency": self.latency_ms, "conv_macs": self.conv_macs}.get(name)


@dataclass(frozen=True)
class TrialSummary:
    """One trial as the report shows it; None where a quantity was not recorded."""

    number: int
    state: str  # Optuna's TrialState name: COMPLETE, FAIL, RUNNING, PRUNED, WAITING
    feasible: bool
    reference: bool
    plan_text: str
    accuracy: float | None  # in [0, 1]; None when untrained (infeasible, failed)
    macs: float | None
    params: float | None
    conv_macs: float | None
    latency_ms: float | None
    train_time: float | None  # seconds
    accuracy_delta: float | None  # accuracy - original accuracy
    macs_ratio: float | None  # original MACs / MACs
    params_ratio: float | None
    latency_speedup: float | None  # original latency / latency
    failure: str | None
    constraints: dict[str, float] = field(default_factory=dict)
    reused_from: int | None = None

    @property
    def complete(self) -> bool:
        return self.state == TrialState.COMPLETE.name

    def cost(self, name: str) -> float | None:
        return {"macs": self.macs, "params": self.params, "latency": self.latency_ms, "conv_macs": self.conv_macs}.get(name)


@dataclass(frozen=True)
class Front:
    """The accuracy-against-one-cost front over the completed feasible trials that recorded that cost."""

    cost: str  # "macs", "params" or "latency"
    label: str
    numbers: tuple[int, ...]  # on the front, sorted by cost (ascending)


@dataclass(frozen=True, eq=False)
class ReportData:
    """What the report shows; see the module docstring."""

    study_name: str
    model: str
    objectives: tuple[str, ...]
    directions: tuple[str, ...]  # "maximize" / "minimize", in the order of objectives
    original: Original
    trials: tuple[TrialSummary, ...]  # every trial, by number
    pareto: tuple[TrialSummary, ...]  # the study's Pareto set, sorted by MACs then accuracy (best first)
    picks: dict[str, int]  # shortcut ("pareto:knee", ...) -> trial number
    fronts: dict[str, Front]  # cost -> front, for each cost some completed trial recorded
    hypervolume: HypervolumeHistory | None
    hypervolume_reason: str | None  # why hypervolume is None
    importances: Importances
    settings: tuple[tuple[str, str], ...]
    trials_frame: pd.DataFrame  # one row a trial, what trials.csv holds

    @property
    def counts(self) -> dict[str, int]:
        """Trials by outcome: total, complete, feasible, infeasible, failed, other (running, pruned, waiting)."""
        complete = [t for t in self.trials if t.complete]
        failed = sum(t.state == TrialState.FAIL.name for t in self.trials)
        return {
            "total": len(self.trials),
            "complete": len(complete),
            "feasible": sum(t.feasible for t in complete),
            "infeasible": sum(not t.feasible for t in complete),
            "failed": failed,
            "other": len(self.trials) - len(complete) - failed,
        }

    def trial(self, number: int) -> TrialSummary:
        for summary in self.trials:
            if summary.number == number:
                return summary
        raise KeyError(f"trial {number} is not in study {self.study_name!r}")

    def picks_of(self, number: int) -> list[str]:
        """The shortcuts that select trial ``number``."""
        return [name for name in SHORTCUTS if self.picks.get(name) == number]

    def pareto_frame(self) -> pd.DataFrame:
        """The Pareto table with raw numbers (what pareto.csv holds)."""
        columns = [
            "number", "plan", "accuracy", "accuracy_delta", "macs", "macs_ratio", "params", "params_ratio",
            "conv_macs", "latency_ms", "latency_speedup", "train_time", "reference", "picks",
        ]
        rows = [
            [
                t.number, t.plan_text, t.accuracy, t.accuracy_delta, t.macs, t.macs_ratio, t.params, t.params_ratio,
                t.conv_macs, t.latency_ms, t.latency_speedup, t.train_time, t.reference, " ".join(self.picks_of(t.number)),
            ]
            for t in self.pareto
        ]
        return pd.DataFrame(rows, columns=columns)


def build_report_data(study: optuna.Study, *, study_dir: str | Path | None = None, importances: bool = True) -> ReportData:
    """Compute everything the report shows from ``study`` (see the module docstring).

    ``study_dir``: the study directory, named in the settings with its storage (password masked).
    ``importances``: False skips them (a terminal table does not show them, and they take a moment).
    """
    objectives = study_objectives(study)
    trials = study.get_trials(deepcopy=False)
    original = _original(study, trials, objectives)
    summaries = tuple(_summarize(t, objectives, original) for t in sorted(trials, key=lambda t: t.number))
    by_number = {s.number: s for s in summaries}

    front = pareto_set(trials, study.directions)
    pareto = tuple(sorted((by_number[t.number] for t in front), key=_table_order))
    picks = {name: trial.number for name, trial in shortcut_picks(front, objectives).items()}

    hypervolume, hypervolume_reason = hypervolume_history(
        study, objectives, original_costs={name: original.cost(name) for name in objectives}
    )
    location = locate_study(study_dir) if study_dir is not None else None
    return ReportData(
        study_name=study.study_name,
        model=model_name(study),
        objectives=objectives,
        directions=tuple(d.name.lower() for d in study.directions),
        original=original,
        trials=summaries,
        pareto=pareto,
        picks=picks,
        fronts=_fronts(summaries),
        hypervolume=hypervolume,
        hypervolume_reason=hypervolume_reason,
        importances=param_importances(study, objectives) if importances else Importances(reason="Importances were not computed."),
        settings=study_settings(study, location=location),
        trials_frame=trials_frame(study, objectives),
    )


def _original(study: optuna.Study, trials: Sequence[FrozenTrial], objectives: Sequence[str]) -> Original:
    stored = study.user_attrs.get(_attrs.ORIGINAL)
    stored = stored if isinstance(stored, Mapping) else {}
    reference = next((t for t in sorted(trials, key=lambda t: t.number) if t.state == TrialState.COMPLETE and is_reference(t)), None)

    def measured(name: str, stored_key: str) -> float | None:
        value = metric(reference, name, objectives) if reference is not None else None
        if value is None and isinstance(stored.get(stored_key), (int, float)):
            value = float(stored[stored_key])
        return value

    return Original(
        trial_number=None if reference is None else reference.number,
        accuracy=None if reference is None else metric(reference, ACCURACY, objectives),
        macs=measured("macs", "macs"),
        params=measured("params", "params"),
        conv_macs=measured("conv_macs", "conv_macs"),
        latency_ms=measured("latency", "latency_ms"),
    )


def _summarize(trial: FrozenTrial, objectives: Sequence[str], original: Original) -> TrialSummary:
    complete = trial.state == TrialState.COMPLETE
    accuracy = metric(trial, ACCURACY, objectives) if complete else None
    macs = metric(trial, "macs", objectives)
    params = metric(trial, "params", objectives)
    latency = metric(trial, "latency", objectives)
    failure = trial.user_attrs.get(_attrs.FAILURE)
    if trial.state == TrialState.FAIL and not failure:
        failure = "failed without a recorded reason"
    train_time = trial.user_attrs.get(_attrs.TRAIN_TIME)
    reused = trial.user_attrs.get(_attrs.REUSED_FROM)
    return TrialSummary(
        number=trial.number,
        state=trial.state.name,
        feasible=is_feasible(trial),
        reference=is_reference(trial),
        plan_text=plan_text(trial),
        accuracy=accuracy,
        macs=macs,
        params=params,
        conv_macs=metric(trial, "conv_macs", objectives),
        latency_ms=latency,
        train_time=float(train_time) if isinstance(train_time, (int, float)) else None,
        accuracy_delta=None if accuracy is None or original.accuracy is None else accuracy - original.accuracy,
        macs_ratio=_ratio(original.macs, macs),
        params_ratio=_ratio(original.params, params),
        latency_speedup=_ratio(original.latency_ms, latency),
        failure=None if failure is None else " ".join(str(failure).split()),
        constraints=dict(trial.constraints),
        reused_from=reused if isinstance(reused, int) else None,
    )


def _ratio(original: float | None, candidate: float | None) -> float | None:
    if original is None or candidate is None or candidate <= 0:
        return None
    return original / candidate


def _table_order(summary: TrialSummary) -> tuple[float, float, int]:
    macs = summary.macs if summary.macs is not None else float("inf")
    accuracy = summary.accuracy if summary.accuracy is not None else float("-inf")
    return (macs, -accuracy, summary.number)


def _fronts(summaries: Sequence[TrialSummary]) -> dict[str, Front]:
    fronts: dict[str, Front] = {}
    for cost, label in COSTS.items():
        points = [
            (s, s.accuracy, value)
            for s in summaries
            if s.complete and s.feasible and s.accuracy is not None and (value := s.cost(cost)) is not None
        ]
        if not points:
            continue
        on_front = front_2d([p[1] for p in points], [p[2] for p in points])
        chosen = sorted((p for p, flag in zip(points, on_front, strict=True) if flag), key=lambda p: (p[2], -p[1], p[0].number))
        fronts[cost] = Front(cost=cost, label=label, numbers=tuple(p[0].number for p in chosen))
    return fronts
