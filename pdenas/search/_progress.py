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

__all__ = ["SearchProgress", "pareto_rows"]


def pareto_rows(study: optuna.Study) -> list[dict[str, Any]]:
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
    """Receives the search's events and shows them."""

    def __init__(self, study_getter: Any, total: int, *, console: Console | None = None) -> None:
        self.console = console or Console()
        self.live_mode = self.console.is_terminal
        self.total = total
        self._get_study = study_getter
        self._started = time.monotonic()
        self._running: dict[int, dict[str, Any]] = {}
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

    # events from run_worker ------------------------------------------------------------------
    def __call__(self, kind: str, info: dict[str, Any]) -> None:
        number = info.get("trial")
        if kind == "start":
            self._running[number] = {"epoch": 0, "epochs": 0, "plan": ""}
        elif kind == "epoch":
            self._running.setdefault(number, {}).update(epoch=info["epoch"], epochs=info["epochs"])
        elif kind in ("complete", "fail", "interrupted", "taken_over"):
            self._running.pop(number, None)
        if not self.live_mode or kind in ("recovered", "repaired", "stale", "taken_over"):
            self._log(kind, info)
        elif self._live is not None:
            self._live.update(self._render())

    def refresh(self, study: optuna.Study | None = None, procs: Any = None) -> None:
        """Redraw from the storage (used while worker processes run the trials)."""
        if self._live is not None:
            self._live.update(self._render(from_storage=True))

    # drawing -------------------------------------------------------------------------------------
    def _log(self, kind: str, info: dict[str, Any]) -> None:
        study = self._get_study()
        number = info.get("trial")
        if kind == "complete":
            record = TrialRecord.from_trial(study.get_trials(deepcopy=False)[number])
            acc_text = f"accuracy {fmt.percent(record.accuracy)}" if record.accuracy is not None else "infeasible (not trained)"
            reused = f" (reused trial {record.reused_from})" if record.reused_from is not None else ""
            self.console.print(
                f"trial {number} done: {acc_text}, MACs {fmt.count(record.macs, digits=4)}, "
                f"params {record.params or 0:,}{reused} | {record.plan_text}",
                highlight=False, soft_wrap=True,
            )
        elif kind == "fail":
            self.console.print(f"trial {number} failed: {info.get('reason')}", highlight=False, soft_wrap=True)
        elif kind == "epoch":
            self.console.print(f"trial {number} epoch {info['epoch']}/{info['epochs']} loss {info['loss']:.4f}", highlight=False)
        elif kind == "start":
            self.console.print(f"trial {number} started", highlight=False)
        elif kind == "recovered":
            self.console.print(f"recovered {info['count']} trial(s) left running by a process that died; re-queued", highlight=False)
        elif kind == "repaired":
            for note in info["notes"]:
                self.console.print(f"study directory: {note}", highlight=False)
        elif kind == "stale":
            numbers = ", ".join(map(str, info["trials"]))
            self.console.print(f"trial(s) {numbers}: no heartbeat from their worker for the grace period; failed as stale and "
                               "re-queued (up to --max-retry times)",
                               highlight=False)
        elif kind == "waiting":
            self.console.print(f"waiting for {info['running']} running trial(s) to reach the target", highlight=False)
        elif kind == "taken_over":
            self.console.print(f"trial {number} was failed as stale by another worker (no heartbeat reached the storage); "
                               "its retry runs it again", highlight=False)
        elif kind in ("stop", "interrupted"):
            self.console.print(f"search stopped: {info.get('reason', 'interrupted by the user')}", highlight=False)

    def _render(self, *, from_storage: bool = False) -> Group:
        study = self._get_study()
        trials = study.get_trials(deepcopy=False)
        done = sum(t.state == TrialState.COMPLETE for t in trials)
        failed = sum(t.state == TrialState.FAIL for t in trials)
        elapsed = time.monotonic() - self._started
        header = Text.assemble(
            ("pdenas search ", "bold"),
            f"{done}/{self.total} trials finished, {failed} failed, {elapsed / 60:.1f} min elapsed",
        )
        running = Table(title="running", title_justify="left", expand=True, show_edge=False)
        running.add_column("trial", justify="right", width=6)
        running.add_column("plan", ratio=3)
        running.add_column("epoch", ratio=1)
        for record in map(TrialRecord.from_trial, trials):
            if record.state != TrialState.RUNNING:
                continue
            epoch, epochs = record.progress or (0, 0)
            bar = ProgressBar(total=max(epochs, 1), completed=epoch, width=20)
            running.add_row(str(record.number), record.plan_text or "(building)", Group(bar, f"{epoch}/{epochs}"))
        pareto = Table(title="Pareto set so far", title_justify="left", expand=True, show_edge=False)
        for name, justify in (("trial", "right"), ("accuracy", "right"), ("MACs", "right"), ("fewer MACs", "right"), ("plan", "left")):
            pareto.add_column(name, justify=justify)
        for row in pareto_rows(study):
            pareto.add_row(
                str(row["number"]) + (" (original)" if row["reference"] else ""),
                fmt.percent(row["accuracy"]), fmt.count(row["macs"], digits=4), fmt.ratio(row["macs_ratio"]), row["plan"],
            )
        return Group(header, running, pareto)
