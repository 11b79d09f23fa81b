"""Live progress of a search: trials done/total, the running candidate's plan and epoch, and the Pareto
set so far (rich on a terminal; plain log lines otherwise)."""

from __future__ import annotations

import time
from typing import Any

import optuna
from optuna.trial import TrialState
from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from .. import _format as fmt
from ._record import StudyRecord, TrialRecord, pareto_trials

__all__ = ["SearchProgress"]


def _pareto_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """The Pareto set so far (:func:`pareto_trials`), trained trials only, by MACs, with the MAC ratio to the original."""
    original = StudyRecord.from_study(study).original
    rows = []
    for record in map(TrialRecord.from_trial, pareto_trials(study)):
        if record.accuracy is None:
            continue
        macs = record.macs or 0
        rows.append({
            "number": record.number,
            "accuracy": record.accuracy,
            "macs": macs,
            "params": record.params or 0,
            "macs_ratio": (original.macs or 0) / macs if macs else float("nan"),
            "plan": record.plan_text,
            "reference": record.reference,
        })
    return sorted(rows, key=lambda r: r["macs"])


class SearchProgress:
    """Shows the events of :func:`search`: a live table on a terminal, plain log lines otherwise.

    The display draws from the study, which it gets with the ``study`` event once the search has
    created or opened it (before that, loading the data and building the model, it says so).
    """

    def __init__(self, total: int, *, console: Console | None = None) -> None:
        self.console = console or Console(markup=False, highlight=False)
        self.live_mode = self.console.is_terminal
        self.total = total
        self._study: optuna.Study | None = None
        self._stopped: str | None = None  # why the search stopped before its target
        self._started = time.monotonic()
        self._live: Live | None = None

    def __enter__(self) -> "SearchProgress":
        if self.live_mode:
            self._live = Live(self._render(), console=self.console, refresh_per_second=2, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.__exit__(None, None, None)

    def __call__(self, kind: str, info: dict[str, Any]) -> None:
        """One event of the search (``kind``: study, start, epoch, complete, fail, stop, ...)."""
        if kind == "study":
            self._study = info["study"]
        elif kind in ("stop", "interrupted"):
            self._stopped = info.get("reason", "interrupted by the user")
        if kind in _ALWAYS_LOGGED or not self.live_mode:
            self._log(kind, info)
        if self._live is not None:
            self._live.update(self._render())

    # drawing -------------------------------------------------------------------------------------
    def _log(self, kind: str, info: dict[str, Any]) -> None:
        number = info.get("trial")
        if kind == "complete":
            record: TrialRecord = info["record"]
            acc_text = f"accuracy {fmt.percent(record.accuracy)}" if record.accuracy is not None else "infeasible (not trained)"
            reused = f" (reused trial {record.reused_from})" if record.reused_from is not None else ""
            self._print(
                f"trial {number} done: {acc_text}, MACs {fmt.count(record.macs, digits=4)}, "
                f"params {record.params or 0:,}{reused} | {record.plan_text}"
            )
        elif kind == "fail":
            self._print(f"trial {number} failed: {info.get('reason')}")
        elif kind == "pruned":
            self._print(f"trial {number} {info.get('reason')} | {info['record'].plan_text}")
        elif kind == "promoted":
            numbers = ", ".join(map(str, info["trials"]))
            self._print(f"trial(s) {numbers}: now in their rung's top 1/eta; queued to continue (successive halving)")
        elif kind == "stages":
            self._print(f"trial {number} stage-wise: {stage_summary(info['stages'])}; accuracy before fine-tuning "
                        f"{fmt.percent(info.get('initial_accuracy'))}")
        elif kind == "original_wait":
            where = f" on {info['worker']}" if info.get("worker") else ""
            self._print(f"trial {number} waits for the original model (trial {info['original']}{where}) to finish training: "
                        "every candidate compresses its weights")
        elif kind == "epoch":
            self._print(f"trial {number} epoch {info['epoch']}/{info['epochs']} loss {info['loss']:.4f}")
        elif kind == "start":
            self._print(f"trial {number} started")
        elif kind == "recovered":
            self._print(f"recovered {info['count']} trial(s) left running by a process that died; re-queued")
        elif kind == "repaired":
            for note in info["notes"]:
                self._print(f"study directory: {note}")
        elif kind == "stale":
            numbers = ", ".join(map(str, info["trials"]))
            self._print(f"trial(s) {numbers}: no heartbeat from their worker for the grace period; failed as stale and "
                        "re-queued (up to --max-retry times)")
        elif kind == "waiting":
            self._print(f"waiting for {info['running']} running trial(s) to reach the target")
        elif kind == "taken_over":
            self._print(f"trial {number} was failed as stale by another worker (no heartbeat reached the storage); "
                        "its retry runs it again")
        elif kind in ("stop", "interrupted"):
            self._print(f"search stopped: {self._stopped}")

    def _print(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def _render(self) -> Group:
        parts: list[Any] = self._tables() if self._study is not None else [
            Text.assemble(("pdenas search ", "bold"), f"preparing: loading the data and the model, {self._elapsed()}")
        ]
        if self._stopped is not None:
            parts.append(Text(f"search stopped: {self._stopped}", style="bold red"))
        return Group(*parts)

    def _elapsed(self) -> str:
        return f"{(time.monotonic() - self._started) / 60:.1f} min elapsed"

    def _tables(self) -> list[Any]:
        """The header, the running trials with their epochs, and the Pareto set so far."""
        assert self._study is not None
        trials = self._study.get_trials(deepcopy=False)
        records = [TrialRecord.from_trial(t) for t in trials]
        done = sum(r.finished for r in records)
        stopped = sum(r.stopped_at is not None for r in records)
        failed = sum(t.state == TrialState.FAIL for t in trials)
        halted = f" ({stopped} stopped at a rung)" if stopped else ""
        header = Text.assemble(("pdenas search ", "bold"), f"{done}/{self.total} trials finished{halted}, {failed} failed, {self._elapsed()}")
        running = Table(title="running", title_justify="left", expand=True, show_edge=False)
        running.add_column("trial", justify="right", width=6)
        running.add_column("plan", ratio=3)
        running.add_column("epoch", ratio=1)
        for record in records:
            if record.state != TrialState.RUNNING:
                continue
            epoch, epochs = record.progress or (0, 0)
            bar = ProgressBar(total=max(epochs, 1), completed=epoch, width=20)
            running.add_row(str(record.number), Text(record.plan_text or "(building)"), Group(bar, f"{epoch}/{epochs}"))
        pareto = Table(title="Pareto set so far", title_justify="left", expand=True, show_edge=False)
        for name, justify in (("trial", "right"), ("accuracy", "right"), ("MACs", "right"), ("fewer MACs", "right"), ("plan", "left")):
            pareto.add_column(name, justify=justify)
        for row in _pareto_rows(self._study):
            pareto.add_row(
                str(row["number"]) + (" (original)" if row["reference"] else ""),
                fmt.percent(row["accuracy"]), fmt.count(row["macs"], digits=4), fmt.ratio(row["macs_ratio"]), Text(row["plan"]),
            )
        return [header, running, pareto]


def stage_summary(stages: dict[str, Any]) -> str:
    """The stage-wise step of a trial in one line: per stage its variant, loss, and trained or reused."""
    parts = []
    for name, stage in stages.items():
        how = "reused" if stage.reused else f"trained {fmt.seconds(stage.train_time)}"
        parts.append(f"{name} {stage.describe()} loss {stage.loss:.3f} ({how})")
    return "; ".join(parts)


# shown as lines even on a terminal (above the live table): what a person must not miss
_ALWAYS_LOGGED = ("recovered", "repaired", "stale", "taken_over", "stop", "interrupted", "original_wait")
