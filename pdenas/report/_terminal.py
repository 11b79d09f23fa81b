"""``pdenas show DIR``: the Pareto set as a rich table in the terminal, drawn from a ReportData.

Each number sits over its comparison with the original model (accuracy over its change, MACs over
how many times fewer). Below WIDE columns, latency and training time are left out so that the plans
stay readable in an 80-column terminal.
"""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .. import _format as fmt
from ._data import ReportData

__all__ = ["print_pareto", "print_stage_verdicts"]

_PICK_PREFIX = "pareto:"
WIDE = 110


def print_stage_verdicts(data: ReportData, console: Console | None = None) -> None:
    """Per stage and kept blocks, in words: does the best Global layer or one more kept block pay more."""
    console = console or Console()
    if not data.stages.choices:
        return
    console.print(Text("Where a Global layer pays (stage loss per extra MMAC; details in report.html, stages.csv)"))
    for c in data.stages.choices:
        console.print(f"  {c.stage}, {c.keep} kept: {c.verdict}", markup=False, highlight=False, soft_wrap=True)


def print_pareto(data: ReportData, console: Console | None = None) -> None:
    """Print the Pareto set of ``data`` (sorted by MACs) with its ratios to the original model."""
    console = console or Console()
    counts = data.counts
    title = Text(f"Pareto set of {data.model or data.study_name}")  # Text: no rich markup from the study
    summary = (
        f"{counts['total']} trials: {counts['complete']} complete, {counts['failed']} failed, "
        f"{counts['infeasible']} infeasible" + (f", {counts['stopped']} stopped at a rung" if counts["stopped"] else "")
    )
    if not data.pareto:
        console.print(title)
        console.print(f"No feasible trial has completed yet ({summary}).", markup=False, highlight=False)
        return
    wide = console.width >= WIDE
    with_latency = wide and any(t.latency_ms is not None for t in data.pareto)
    fixed = 80 if wide else 54  # what the columns other than the plan take, about
    longest = max((len(line) for t in data.pareto for line in t.plan_lines()), default=20)
    measured = f" Latency: {data.latency_setup}." if with_latency and data.latency_setup else ""
    table = Table(
        title=title, caption=f"{summary}. Ratios: original ÷ candidate.{measured}"
        + (" (Accuracy before fine-tuning.)" if any(t.initial_accuracy is not None for t in data.pareto) else "")
        + " Pick: pdenas export DIR --trial pareto:<pick>",
        box=box.SIMPLE_HEAD, show_lines=True, header_style="bold", title_justify="left", caption_justify="left",
    )
    table.add_column("trial", justify="right", no_wrap=True)
    table.add_column("plan", overflow="fold", min_width=max(16, min(longest, console.width - fixed)))
    table.add_column("accuracy\nΔ", justify="right", no_wrap=True)
    table.add_column("MACs\nratio", justify="right", no_wrap=True)
    table.add_column("params\nratio", justify="right", no_wrap=True)
    if with_latency:
        table.add_column("latency\nspeed-up", justify="right", no_wrap=True)
    if wide:
        table.add_column("train", justify="right", no_wrap=True)
    table.add_column("pick", style="cyan", no_wrap=True)
    for t in data.pareto:
        # a stage a line
        plan = Text("\n".join(t.plan_lines()) if t.plan_text else "(no plan recorded)")
        if t.reference:
            plan.append("\n(original model)", style="bold")
        cells: list[str | Text] = [
            str(t.number),
            plan,
            f"{fmt.percent(t.accuracy)}\n{'' if t.reference else fmt.points(t.accuracy_delta)}"
            + (f"\n({fmt.percent(t.initial_accuracy)})" if t.initial_accuracy is not None else ""),
            f"{fmt.count(t.macs)}\n{fmt.ratio(t.macs_ratio)}",
            f"{fmt.count(t.params)}\n{fmt.ratio(t.params_ratio)}",
        ]
        if with_latency:
            cells.append(f"{fmt.milliseconds(t.latency_ms)}\n{fmt.ratio(t.latency_speedup)}")
        if wide:
            cells.append(f"reused\n#{t.reused_from}" if t.reused_from is not None else fmt.seconds(t.train_time))
        cells.append("\n".join(name.removeprefix(_PICK_PREFIX) for name in data.picks_of(t.number)))
        table.add_row(*cells, style="yellow" if t.reference else None)
    console.print(table)
