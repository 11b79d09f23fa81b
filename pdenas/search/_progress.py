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

from . import _attrs as A

__all__ = ["SearchProgress", "pareto_rows", "format_macs"]


def format_macs(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:.0f}"


def pareto_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """The feasible Pareto set so far (Optuna's ``best_trials``), with ratios to the original, by MACs."""
    original = study.user_attrs.get(A.ORIGINAL, {})
    rows = []
    try:
        best = study.best_trials
    except (RuntimeError, ValueError):
        best = []
    for trial in best:
        attrs = trial.user_attrs
        if A.ACCURACY not in attrs:
            continue
        macs = attrs.get(A.MACS, 0)
        rows.append({
            "number": trial.number,
            "accuracy": attrs[A.ACCURACY],
            "macs": macs,
            "params": attrs.get(A.PARAMS, 0),
            "macs_ratio": (original.get("macs", 0) / macs) if macs else float("nan"),
            "plan": attrs.get(A.PLAN_TEXT, ""),
            "reference": bool(attrs.get(A.REFERENCE)),
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
            t = study.get_trials(deepcopy=False)[number]
            attrs = t.user_attrs
            acc = attrs.get(A.ACCURACY)
            acc_text = f"accuracy {acc * 100:.2f}%" if acc is not None else "infeasible (not trained)"
            reused = f" (reused trial {attrs[A.REUSED_FROM]})" if A.REUSED_FROM in attrs else ""
            self.console.print(
                f"trial {number} done: {acc_text}, MACs {format_macs(attrs.get(A.MACS, 0))}, "
                f"params {attrs.get(A.PARAMS, 0):,}{reused} | {attrs.get(A.PLAN_TEXT, '')}",
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
        for t in trials:
            if t.state != TrialState.RUNNING:
                continue
            epoch, epochs = t.user_attrs.get(A.PROGRESS, [0, 0])
            bar = ProgressBar(total=max(epochs, 1), completed=epoch, width=20)
            running.add_row(str(t.number), t.user_attrs.get(A.PLAN_TEXT, "(building)"), Group(bar, f"{epoch}/{epochs}"))
        pareto = Table(title="Pareto set so far", title_justify="left", expand=True, show_edge=False)
        for name, justify in (("trial", "right"), ("accuracy", "right"), ("MACs", "right"), ("fewer MACs", "right"), ("plan", "left")):
            pareto.add_column(name, justify=justify)
        for row in pareto_rows(study):
            pareto.add_row(
                str(row["number"]) + (" (original)" if row["reference"] else ""),
                f"{row['accuracy'] * 100:.2f}%", format_macs(row["macs"]), f"{row['macs_ratio']:.2f}x", row["plan"],
            )
        return Group(header, running, pareto)
