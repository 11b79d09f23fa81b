"""Plotly figures drawn from a :class:`ReportData` only: they compute nothing about the study.

Hover texts are built from already computed numbers; every piece of text that came from the study is
HTML-escaped, since plotly renders a subset of HTML in hover labels.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .. import _format as fmt
from ._data import ReportData, TrialSummary
from ._stages import StageVariantSummary

__all__ = ["front_figure", "hypervolume_figure", "importance_figure", "stage_figure", "OBJECTIVE_LABELS"]

OBJECTIVE_LABELS = {"accuracy": "accuracy", "macs": "MACs", "params": "parameters", "latency": "latency"}

_HEIGHT = 480
_COLORS = {
    "trial": "#9aa5b1",
    "pareto": "#2563eb",
    "infeasible": "#dc2626",
    "original": "#f59e0b",
}
_COST_TICKS = {"macs": "~s", "params": "~s", "latency": ""}  # "": plotly's default ticks


def front_figure(data: ReportData, cost: str) -> go.Figure:
    """Accuracy (y) against ``cost`` (x, log axis): trials, the front as a step line, infeasible, original."""
    front = data.fronts[cost]
    on_front = set(front.numbers)
    pareto = {t.number for t in data.pareto}
    shown = [t for t in data.trials if t.complete and t.measured(cost) is not None]
    feasible = [t for t in shown if t.feasible and t.accuracy is not None]
    infeasible = [t for t in shown if not t.feasible]
    others = [t for t in feasible if t.number not in on_front and not t.reference]
    front_trials = [data.trial(number) for number in front.numbers]
    reference = [t for t in feasible if t.reference]

    def hover(trials: Sequence[TrialSummary]) -> list[str]:
        return [_hover(data, t, on_study_front=t.number in pareto) for t in trials]

    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            name="other trials", x=[t.measured(cost) for t in others], y=[t.accuracy for t in others], mode="markers",
            marker={"color": _COLORS["trial"], "size": 8, "opacity": 0.8}, hovertext=hover(others), hoverinfo="text",
        )
    )
    fig.add_trace(
        go.Scatter(
            name="Pareto front", x=[t.measured(cost) for t in front_trials], y=[t.accuracy for t in front_trials],
            mode="lines+markers", line={"shape": "hv", "color": _COLORS["pareto"], "width": 2},
            marker={"color": _COLORS["pareto"], "size": 10, "line": {"color": "white", "width": 1}},
            hovertext=hover(front_trials), hoverinfo="text",
        )
    )
    if infeasible:
        floor = _floor([t.accuracy for t in feasible if t.accuracy is not None])
        fig.add_trace(
            go.Scatter(
                name="infeasible (untrained, drawn at the bottom)", x=[t.measured(cost) for t in infeasible],
                y=[floor] * len(infeasible), mode="markers",
                marker={"color": _COLORS["infeasible"], "size": 9, "symbol": "x"},
                hovertext=hover(infeasible), hoverinfo="text",
            )
        )
    if reference:
        fig.add_trace(
            go.Scatter(
                name="original model", x=[t.measured(cost) for t in reference], y=[t.accuracy for t in reference],
                mode="markers", marker={"color": _COLORS["original"], "size": 18, "symbol": "star", "line": {"color": "black", "width": 1}},
                hovertext=hover(reference), hoverinfo="text",
            )
        )
    if data.original.accuracy is not None:
        fig.add_hline(
            y=data.original.accuracy, line={"dash": "dot", "color": _COLORS["original"], "width": 1},
            annotation_text="original accuracy", annotation_position="bottom left",
            annotation_font={"color": "#92400e", "size": 11},
        )
    fig.update_layout(
        title=f"Validation accuracy against {front.label}",
        xaxis={"title": f"{front.label} (log scale)", "type": "log", "tickformat": _COST_TICKS.get(cost, "~s")},
        yaxis={"title": "validation accuracy", "tickformat": ".1%"},
        template="plotly_white", height=_HEIGHT, hovermode="closest",
        legend={"orientation": "h", "y": -0.2},
        margin={"t": 60, "b": 40},
    )
    return fig


def hypervolume_figure(data: ReportData) -> go.Figure:
    """Dominated fraction of the reference box against the compute spent (worker-minutes of finished trials)."""
    history = data.hypervolume
    if history is None:
        raise ValueError("this study has no hypervolume history (ReportData.hypervolume_reason says why)")
    fig = go.Figure(
        go.Scatter(
            x=[seconds / 60 for seconds in history.compute], y=list(history.values), mode="lines+markers", name="hypervolume",
            customdata=list(history.trial_numbers), line={"shape": "hv", "color": _COLORS["pareto"]}, marker={"size": 6},
            hovertemplate="after trial %{customdata}, %{x:.1f} worker-minutes: %{y:.2%} of the reference box<extra></extra>",
        )
    )
    fig.update_layout(
        title="Hypervolume over compute",
        xaxis={"title": "worker-minutes of finished trials (stopped and failed ones included)", "rangemode": "tozero"},
        yaxis={"title": "dominated fraction of the reference box", "tickformat": ".0%", "rangemode": "tozero"},
        template="plotly_white", height=380, margin={"t": 60, "b": 40},
    )
    return fig


def importance_figure(data: ReportData) -> go.Figure:
    """Importance of each search parameter for each objective (grouped horizontal bars)."""
    by_objective = data.importances.by_objective
    if not by_objective:
        raise ValueError("this study has no importances (ReportData.importances.reason says why)")
    first = next(iter(by_objective.values()))
    params = sorted(first, key=lambda name: first[name])  # bottom-up: most important on top
    fig = go.Figure()
    for objective, importances in by_objective.items():
        fig.add_trace(
            go.Bar(
                name=f"for {OBJECTIVE_LABELS.get(objective, objective)}", orientation="h",
                y=[html.escape(p) for p in params], x=[importances.get(p, 0.0) for p in params],
                hovertemplate="%{y}: %{x:.2f}<extra>%{fullData.name}</extra>",
            )
        )
    fig.update_layout(
        title="Hyperparameter importances (Optuna, PED-ANOVA)", barmode="group",
        xaxis={"title": "importance (sums to 1 per objective)", "tickformat": ".0%"},
        template="plotly_white", height=max(320, 140 + 20 * len(params) * len(by_objective)),
        legend={"orientation": "h", "x": 1, "xanchor": "right", "y": 1.02, "yanchor": "bottom"}, margin={"t": 80, "b": 40},
    )
    return fig


def stage_figure(data: ReportData) -> go.Figure:
    """Per stage: stage loss (y) against the stage's MMACs (x) of every variant the trials used; blocks
    only as a line through k = 1, 2, ... kept blocks (ending at the original stage), Global layers as points."""
    variants = [v for v in data.stages.variants if v.macs is not None]
    if not variants:
        raise ValueError("this study has no per-stage view (ReportData.stages.reason says why)")
    stages = list(dict.fromkeys(v.stage for v in variants))
    cols = min(len(stages), 4)
    rows = math.ceil(len(stages) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[html.escape(s) for s in stages], horizontal_spacing=0.06)
    for i, stage in enumerate(stages):
        row, col = divmod(i, cols)
        mine = [v for v in variants if v.stage == stage]
        blocks = sorted((v for v in mine if not v.has_global), key=lambda v: v.keep)
        globals_ = [v for v in mine if v.has_global]
        for name, points, mode, marker in (
            ("blocks only", blocks, "lines+markers", {"color": _COLORS["trial"], "size": 8}),
            ("with a Global layer", globals_, "markers", {"color": _COLORS["pareto"], "size": 9, "symbol": "diamond"}),
        ):
            fig.add_trace(go.Scatter(
                name=name, legendgroup=name, showlegend=i == 0, x=[v.macs / 1e6 for v in points], y=[v.loss for v in points],
                mode=mode, marker=marker, line={"color": _COLORS["trial"]}, hovertext=[_stage_hover(v) for v in points],
                hoverinfo="text",
            ), row=row + 1, col=col + 1)
        fig.update_xaxes(title_text="stage MMACs" if row == rows - 1 else None, row=row + 1, col=col + 1)
        fig.update_yaxes(title_text="stage loss" if col == 0 else None, rangemode="tozero", row=row + 1, col=col + 1)
    fig.update_layout(
        title="Stage loss against the stage's MACs (lower left is better)", template="plotly_white",
        height=340 * rows + 80, legend={"orientation": "h", "y": -0.25}, margin={"t": 80, "b": 40},
    )
    return fig


def _stage_hover(v: StageVariantSummary) -> str:
    return "<br>".join([f"<b>{html.escape(v.stage)}: {html.escape(v.text)}</b>", *map(html.escape, v.figures())])


def _floor(accuracies: Sequence[float]) -> float:
    if not accuracies:
        return 0.0
    low, high = min(accuracies), max(accuracies)
    return max(0.0, low - max(0.05 * (high - low), 0.01))


def _hover(data: ReportData, trial: TrialSummary, *, on_study_front: bool) -> str:
    tags = []
    if trial.reference:
        tags.append("original model")
    elif on_study_front:
        tags.append("Pareto set")
    tags += data.picks_of(trial.number)
    if not trial.feasible:
        broken = [f"{name} exceeded by {fmt.count(value)}" for name, value in trial.constraints.items() if value > 0]
        tags.append("infeasible" + (f": {', '.join(broken)}" if broken else ""))
    head = f"<b>trial {trial.number}</b>" + (f" ({html.escape(', '.join(tags))})" if tags else "")
    lines = [head]
    lines += [html.escape(stage) for stage in trial.plan_text.split("; ") if stage] or ["(no plan recorded)"]
    if trial.accuracy is not None:
        delta = f" ({fmt.points(trial.accuracy_delta)})" if trial.accuracy_delta is not None and not trial.reference else ""
        lines.append(f"accuracy {fmt.percent(trial.accuracy)}{delta}")
    else:
        lines.append("accuracy: untrained")
    lines.append(f"MACs {fmt.count(trial.macs)}" + _times(trial.macs_ratio, ("smaller", "larger"), trial.reference))
    lines.append(f"params {fmt.count(trial.params)}" + _times(trial.params_ratio, ("smaller", "larger"), trial.reference))
    if trial.latency_ms is not None:
        lines.append(
            f"latency {fmt.milliseconds(trial.latency_ms)}" + _times(trial.latency_speedup, ("faster", "slower"), trial.reference)
        )
    return "<br>".join(lines)


def _times(ratio: float | None, words: tuple[str, str], reference: bool) -> str:
    """" (4.58x smaller)" for original / candidate = 4.58; " (1.30x larger)" for 0.77."""
    if ratio is None or reference or ratio <= 0:
        return ""
    return f" ({fmt.ratio(ratio)} {words[0]})" if ratio >= 1 else f" ({fmt.ratio(1 / ratio)} {words[1]})"
