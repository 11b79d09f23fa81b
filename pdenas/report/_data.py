"""Everything the report shows, computed once from a study: the data that the figures, the page,
the CSV files and the terminal only draw.

``build_report_data(study)`` reads the study's records (:class:`pdenas.search.TrialRecord`,
:class:`pdenas.search.StudyRecord`), compares every trial with the original model, takes the Pareto set
from Optuna (:func:`pdenas.search.pareto_trials`), sorts it by MACs, and adds the hypervolume history,
the importances and the study's settings.

Ratios read "how many times smaller" (original / candidate), so 4.58x means a candidate with a 4.58th
of the original's MACs; the accuracy change is candidate minus original.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna
import pandas as pd
from optuna.trial import TrialState

from .. import _format as fmt
from .._urls import mask_url
from ..search import OriginalModel, StudyRecord, TrialRecord, pareto_trials
from ._frame import trials_frame
from ._hypervolume import HypervolumeHistory, hypervolume_history
from ._importances import Importances, param_importances
from ._objectives import study_objectives
from ._pareto import SHORTCUTS, front_2d, shortcut_picks
from ._settings import study_settings
from ._stages import StageView, stage_view
from ._study_dir import locate_study

__all__ = ["TrialSummary", "Front", "ReportData", "build_report_data", "COSTS"]

# the costs drawn against accuracy, with their labels
COSTS: dict[str, str] = {"macs": "MACs", "params": "parameters", "latency": "latency (ms)"}


@dataclass(frozen=True)
class TrialSummary(TrialRecord):
    """A trial as the report shows it: its record, compared with the original model (None where either
    side is unknown)."""

    accuracy_delta: float | None = None  # accuracy - original accuracy
    macs_ratio: float | None = None  # original MACs / MACs
    params_ratio: float | None = None
    latency_speedup: float | None = None  # original latency / latency

    def plan_lines(self) -> list[str]:
        """The plan a stage a line, each distilled stage with its stage loss ("layer1: keep 1 · loss 0.412")."""
        lines = []
        for part in self.plan_text.split("; ") if self.plan_text else []:
            name = part.split(":", 1)[0]
            stage = (self.stages or {}).get(name)
            lines.append(f"{part} · loss {stage.loss:.3f}" if stage is not None else part)
        return lines

    @classmethod
    def compare(cls, record: TrialRecord, original: OriginalModel) -> "TrialSummary":
        fields = {f.name: getattr(record, f.name) for f in dataclasses.fields(TrialRecord)}
        return cls(
            **fields,
            accuracy_delta=None if record.accuracy is None or original.accuracy is None else record.accuracy - original.accuracy,
            macs_ratio=_ratio(original.macs, record.macs),
            params_ratio=_ratio(original.params, record.params),
            latency_speedup=_ratio(original.latency_ms, record.latency_ms),
        )


@dataclass(frozen=True)
class Front:
    """The accuracy-against-one-cost front over the completed feasible trials that recorded that cost."""

    cost: str  # "macs", "params" or "latency"
    label: str  # latency: with the runtime it was measured in
    numbers: tuple[int, ...]  # on the front, sorted by cost (ascending)


@dataclass(frozen=True, eq=False)
class ReportData:
    """What the report shows; see the module docstring."""

    study_name: str
    model: str
    objectives: tuple[str, ...]
    directions: tuple[str, ...]  # "maximize" / "minimize", in the order of objectives
    original: OriginalModel
    trials: tuple[TrialSummary, ...]  # every trial, by number
    pareto: tuple[TrialSummary, ...]  # the study's Pareto set, sorted by MACs then accuracy (best first)
    picks: dict[str, int]  # shortcut ("pareto:knee", ...) -> trial number
    fronts: dict[str, Front]  # cost -> front, for each cost some completed trial recorded
    hypervolume: HypervolumeHistory | None
    hypervolume_reason: str | None  # why hypervolume is None
    importances: Importances
    settings: tuple[tuple[str, str], ...]
    trials_frame: pd.DataFrame  # one row a trial, what trials.csv holds
    stages: StageView  # where a Global layer pays, stage by stage (stages.csv)
    latency_setup: str | None = None  # how latency was measured: "onnxruntime, batch 1, 2 threads" (None: not, or not recorded)

    @property
    def counts(self) -> dict[str, int]:
        """Trials by outcome: total, complete, feasible, infeasible, failed, stopped (at a rung by successive
        halving), other (running, waiting, pruned as not needed)."""
        complete = [t for t in self.trials if t.complete]
        failed = sum(t.state == TrialState.FAIL for t in self.trials)
        stopped = sum(t.stopped_at is not None for t in self.trials)
        return {
            "total": len(self.trials),
            "complete": len(complete),
            "feasible": sum(t.feasible for t in complete),
            "infeasible": sum(not t.feasible for t in complete),
            "failed": failed,
            "stopped": stopped,
            "other": len(self.trials) - len(complete) - failed - stopped,
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
            "number", "plan", "accuracy", "accuracy_delta", "initial_accuracy", "macs", "macs_ratio", "params",
            "params_ratio", "conv_macs", "latency_ms", "latency_speedup", "latency_runtime", "latency_batch_size",
            "latency_threads", "stage_losses", "stagewise_time", "train_time", "reference", "picks",
        ]
        rows = [
            [
                t.number, t.plan_text, t.accuracy, t.accuracy_delta, t.initial_accuracy, t.macs, t.macs_ratio, t.params,
                t.params_ratio, t.conv_macs, t.latency_ms, t.latency_speedup, t.latency_runtime, t.latency_batch_size,
                t.latency_threads,
                "; ".join(f"{name}: {stage.loss:.4f}" for name, stage in (t.stages or {}).items()), t.stagewise_time,
                t.train_time, t.reference, " ".join(self.picks_of(t.number)),
            ]
            for t in self.pareto
        ]
        return pd.DataFrame(rows, columns=columns)

    def stages_frame(self) -> pd.DataFrame:
        """The per-stage view, a row per stage and kept blocks (what stages.csv holds)."""
        columns = [
            "stage", "keep", "blocks_loss", "blocks_macs", "blocks_best_accuracy", "global", "global_loss", "global_macs",
            "global_added_mmacs", "global_loss_drop_per_mmac", "global_best_accuracy", "globals_tried", "more_blocks",
            "more_blocks_loss", "more_blocks_added_mmacs", "more_blocks_loss_drop_per_mmac", "more_blocks_best_accuracy",
            "verdict",
        ]
        rows = []
        for c in self.stages.choices:
            b, g, k = c.blocks, c.best_global, c.more_blocks
            rows.append([
                c.stage, c.keep, _get(b, "loss"), _get(b, "macs"), _get(b, "best_accuracy"), _get(g, "text"),
                _get(g, "loss"), _get(g, "macs"), c.global_added_mmacs, c.global_gain, _get(g, "best_accuracy"),
                c.globals_tried, _get(k, "text"), _get(k, "loss"), c.block_added_mmacs, c.block_gain,
                _get(k, "best_accuracy"), c.verdict,
            ])
        return pd.DataFrame(rows, columns=columns)


def build_report_data(study: optuna.Study, *, study_dir: str | Path | None = None, importances: bool = True) -> ReportData:
    """Compute everything the report shows from ``study`` (see the module docstring).

    ``study_dir``: the study directory, named in the settings with its storage (password masked).
    ``importances``: False skips them (a terminal table does not show them, and they take a moment).
    """
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    records = [TrialRecord.from_trial(t) for t in trials]
    record = StudyRecord.from_study(study, records)
    objectives = study_objectives(study, record)
    summaries = tuple(TrialSummary.compare(r, record.original) for r in records)
    by_number = {s.number: s for s in summaries}

    pareto = tuple(sorted((by_number[t.number] for t in pareto_trials(study)), key=_table_order))
    picks = {name: summary.number for name, summary in shortcut_picks(pareto, objectives).items()}

    hypervolume, hypervolume_reason = hypervolume_history(
        study, objectives, records, trials=trials,
        original_costs={name: record.original.cost(name) for name in objectives},
    )
    location = locate_study(study_dir) if study_dir is not None else None
    latency_setup = _latency_setup(summaries)
    return ReportData(
        study_name=study.study_name,
        model=mask_url(record.model),
        objectives=objectives,
        directions=tuple(d.name.lower() for d in study.directions),
        original=record.original,
        trials=summaries,
        pareto=pareto,
        picks=picks,
        fronts=_fronts(summaries, latency_setup),
        hypervolume=hypervolume,
        hypervolume_reason=hypervolume_reason,
        importances=param_importances(study, objectives, records) if importances else Importances(reason="Importances were not computed."),
        settings=study_settings(study, record, location=location),
        trials_frame=trials_frame(study, objectives, records),
        stages=stage_view(records, record.original),
        latency_setup=latency_setup,
    )


def _get(item: object, name: str) -> object:
    return None if item is None else getattr(item, name)


def _ratio(original: float | None, candidate: float | None) -> float | None:
    """original / candidate (None when either is unknown or the candidate's is not positive)."""
    if original is None or candidate is None or candidate <= 0:
        return None
    return original / candidate


def _table_order(summary: TrialSummary) -> tuple[float, float, int]:
    macs = summary.macs if summary.macs is not None else float("inf")
    accuracy = summary.accuracy if summary.accuracy is not None else float("-inf")
    return (macs, -accuracy, summary.number)


def _latency_setup(summaries: Sequence[TrialSummary]) -> str | None:
    """How the trials' latencies were measured, in words (a study measures them all alike; pdenas 0.1.0 did
    not record it: None)."""
    setups = sorted({
        fmt.runtime_setup(t.latency_runtime, t.latency_batch_size, t.latency_threads)
        for t in summaries if t.latency_ms is not None and t.latency_runtime is not None
    })
    return "; ".join(setups) if setups else None


def _fronts(summaries: Sequence[TrialSummary], latency_setup: str | None) -> dict[str, Front]:
    fronts: dict[str, Front] = {}
    for cost, label in COSTS.items():
        if cost == "latency" and latency_setup is not None:
            label = f"latency (ms; {latency_setup})"
        points = [
            (s, s.accuracy, value)
            for s in summaries
            if s.complete and s.feasible and s.accuracy is not None and (value := s.measured(cost)) is not None
        ]
        if not points:
            continue
        on_front = front_2d([p[1] for p in points], [p[2] for p in points])
        chosen = sorted((p for p, flag in zip(points, on_front, strict=True) if flag), key=lambda p: (p[2], -p[1], p[0].number))
        fronts[cost] = Front(cost=cost, label=label, numbers=tuple(p[0].number for p in chosen))
    return fronts
