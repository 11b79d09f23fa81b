"""``report.html``: one self-contained page (plotly.js embedded once, no CDN) drawn from a ReportData.

Every text that came from the study or the user (model name, paths, plans, settings) goes through
``html.escape``; the figures' JSON is escaped by plotly itself.
"""

from __future__ import annotations

import datetime as _dt
import html
from collections.abc import Iterable, Sequence

import plotly.graph_objects as go
from optuna.trial import TrialState
import plotly.io as pio

from .. import __version__
from .. import _format as fmt
from ._data import ReportData, TrialSummary
from ._figures import OBJECTIVE_LABELS, front_figure, hypervolume_figure, importance_figure, stage_figure
from ._hypervolume import REFERENCE_MARGIN
from ._pareto import SHORTCUTS
from ._stages import StageVariantSummary

__all__ = ["render_html"]

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; max-width: 1200px;
       padding: 1.5rem 2rem 4rem; color: #1f2937; line-height: 1.45; }
h1 { margin-bottom: 0.2rem; } h2 { margin-top: 2.5rem; border-bottom: 1px solid #e5e7eb; padding-bottom: 0.3rem; }
.sub { color: #6b7280; margin-top: 0; }
.cards { display: flex; flex-wrap: wrap; gap: 0.8rem; margin: 1rem 0; }
.card { border: 1px solid #e5e7eb; border-radius: 8px; padding: 0.6rem 0.9rem; min-width: 9rem; }
.card .v { font-size: 1.3rem; font-weight: 600; } .card .k { color: #6b7280; font-size: 0.85rem; }
table { border-collapse: collapse; width: 100%; font-size: 0.9rem; }
th, td { text-align: left; padding: 0.35rem 0.6rem; border-bottom: 1px solid #e5e7eb; vertical-align: top; }
th { background: #f9fafb; } td { white-space: normal; } td.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.ref td { background: #fffbeb; } td.plan { min-width: 15rem; } .scroll { overflow-x: auto; } .pick { color: #2563eb; font-weight: 600; white-space: nowrap; }
.note { color: #4b5563; } code { background: #f3f4f6; padding: 0 0.25rem; border-radius: 3px; }
"""


def render_html(data: ReportData, *, generated_at: _dt.datetime | None = None) -> str:
    """The whole page as a string."""
    page = _Page()
    when = (generated_at or _dt.datetime.now(_dt.timezone.utc)).strftime("%Y-%m-%d %H:%M UTC")
    title = f"pdenas report: {data.model or data.study_name}"
    body: list[str] = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="sub">study {_e(data.study_name)} · generated {_e(when)} by pdenas {_e(__version__)}</p>',
        _summary(data),
        "<h2>Pareto front: accuracy against MACs</h2>",
        page.figure(data, "macs", "No feasible trial has completed yet, so there is no front to draw."),
        "<h2>Accuracy against parameters</h2>",
        page.figure(data, "params", "No completed feasible trial recorded its parameter count."),
        f"<h2>Accuracy against latency{_e(f' in {data.latency_setup}') if data.latency_setup else ''}</h2>",
        page.figure(data, "latency", "Latency was not measured in this study (it is recorded when the search measures it)."),
        "<h2>Hypervolume over compute</h2>",
        page.hypervolume(data),
        "<h2>Hyperparameter importances</h2>",
        page.importances(data),
        "<h2>Pareto set</h2>",
        _pareto_table(data),
        "<h2>Where a Global layer pays, stage by stage</h2>",
        page.stages(data),
        _failures(data.trials),
        "<h2>Settings</h2>",
        _rows_table(("setting", "value"), data.settings),
    ]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(part for part in body if part)
        + "\n</body>\n</html>\n"
    )


class _Page:
    """Renders figures, embedding plotly.js with the first one only."""

    def __init__(self) -> None:
        self._library_included = False

    def _div(self, fig: go.Figure, div_id: str) -> str:
        include = not self._library_included
        self._library_included = True
        return pio.to_html(
            fig, include_plotlyjs=include, full_html=False, div_id=div_id,
            default_height=f"{fig.layout.height or 450}px", config={"displaylogo": False, "responsive": True},
        )

    def figure(self, data: ReportData, cost: str, missing: str) -> str:
        if cost not in data.fronts:
            return f'<p class="note">{_e(missing)}</p>'
        return self._div(front_figure(data, cost), f"front-{cost}")

    def hypervolume(self, data: ReportData) -> str:
        if data.hypervolume is None:
            return f'<p class="note">{_e(data.hypervolume_reason or "Not available.")}</p>'
        ref = ", ".join(f"{OBJECTIVE_LABELS.get(k, k)} {_objective_value(k, v)}" for k, v in data.hypervolume.reference_point.items())
        note = (
            f"Computed by Optuna. Reference point ({ref}): accuracy 0 and {REFERENCE_MARGIN:g}× the original model's "
            "cost; shown as the fraction of the box between it and the ideal corner (100% accuracy, zero cost). "
            "Each point is a completed trial, placed at the worker-minutes spent by every finished trial up to it "
            "(stopped and failed ones included, since they cost compute too). A curve that has flattened out suggests "
            "more compute will add little."
        )
        return self._div(hypervolume_figure(data), "hypervolume") + f'<p class="note">{_e(note)}</p>'

    def stages(self, data: ReportData) -> str:
        view = data.stages
        if not view.choices:
            return f'<p class="note">{_e(view.reason or "No stage was distilled.")}</p>'
        note = (
            "Each changed stage of a candidate was first trained on its own to reproduce the original stage "
            "(stage loss: mean squared error on held-out images over the output's variance; 0 is the original "
            "stage, 1 as good as predicting each channel's mean). Per stage and number of kept blocks k: blocks "
            "only, the best Global layer after them, and one more kept block, with what each adds in MACs and how "
            "much stage loss it removes per extra million MACs. The accuracies are of the trials whose candidates "
            "contained that stage variant, after fine-tuning; they depend on the other stages too, and may rank "
            "the choices differently from the stage loss. Also in stages.csv."
        )
        figure = self._div(stage_figure(data), "stages") if any(v.macs is not None for v in view.variants) else ""
        return figure + _stage_table(data) + f'<p class="note">{_e(note)}</p>'

    def importances(self, data: ReportData) -> str:
        if not data.importances.by_objective:
            return f'<p class="note">{_e(data.importances.reason or "Not available.")}</p>'
        return self._div(importance_figure(data), "importances")


def _summary(data: ReportData) -> str:
    counts = data.counts
    original = data.original
    cards = [
        ("trials", f"{counts['total']}"),
        ("complete · failed · infeasible", f"{counts['complete']} · {counts['failed']} · {counts['infeasible']}"),
        *([("stopped at a rung", f"{counts['stopped']}")] if counts["stopped"] else []),
        ("Pareto set", f"{len(data.pareto)}"),
        ("original accuracy", fmt.percent(original.accuracy)),
        ("original MACs", fmt.count(original.macs)),
        ("original params", fmt.count(original.params)),
    ]
    if data.hypervolume is not None:
        cards.append(("hypervolume", f"{data.hypervolume.final:.1%}"))
    html_cards = "".join(f'<div class="card"><div class="v">{_e(v)}</div><div class="k">{_e(k)}</div></div>' for k, v in cards)
    picks = []
    for name in SHORTCUTS:
        if name in data.picks:
            t = data.trial(data.picks[name])
            picks.append(
                f"<li><code>--trial {_e(name)}</code>: trial {t.number}, {_e(t.plan_text)}, accuracy {_e(fmt.percent(t.accuracy))}, "
                f"MACs {_e(fmt.count(t.macs))} ({_e(fmt.ratio(t.macs_ratio))} smaller)</li>"
            )
    pick_list = f"<ul>{''.join(picks)}</ul>" if picks else '<p class="note">No compressed candidate is on the Pareto front yet.</p>'
    return f'<div class="cards">{html_cards}</div>{pick_list}'


def _pareto_table(data: ReportData) -> str:
    if not data.pareto:
        return '<p class="note">The Pareto set is empty: no feasible trial has completed yet.</p>'
    with_latency = any(t.latency_ms is not None for t in data.pareto)
    head = ["trial", "plan (stage loss after the stage-wise step)", "accuracy", "Δ accuracy", "before fine-tuning", "MACs",
            "MACs ratio", "params", "params ratio"]
    if with_latency:
        head += [f"latency ({data.latency_setup})" if data.latency_setup else "latency", "speed-up"]
    head += ["training time", "shortcut"]
    rows = []
    for t in data.pareto:
        cells = [
            _num(str(t.number)),
            f'<td class="plan">{_plan_cell(t.plan_lines())}{" <b>(original model)</b>" if t.reference else ""}</td>',
            _num(fmt.percent(t.accuracy)),
            _num("" if t.reference else fmt.points(t.accuracy_delta)),
            _num(fmt.percent(t.initial_accuracy) if t.initial_accuracy is not None else ""),
            _num(fmt.count(t.macs)),
            _num(fmt.ratio(t.macs_ratio)),
            _num(fmt.count(t.params)),
            _num(fmt.ratio(t.params_ratio)),
        ]
        if with_latency:
            cells += [_num(fmt.milliseconds(t.latency_ms)), _num(fmt.ratio(t.latency_speedup))]
        train = f"reused #{t.reused_from}" if t.reused_from is not None else fmt.seconds(t.train_time)
        if t.reused_from is None and t.stagewise_time is not None:
            train = f"{fmt.seconds(t.stagewise_time)} + {train}"
        cells += [_num(train), f'<td class="pick">{_e(" ".join(data.picks_of(t.number)))}</td>']
        row_class = ' class="ref"' if t.reference else ""
        rows.append(f"<tr{row_class}>{''.join(cells)}</tr>")
    header = "".join(f"<th>{_e(h)}</th>" for h in head)
    note = ("<p class=\"note\">Sorted by MACs. Ratios are original ÷ candidate (how many times smaller or faster). "
            "Before fine-tuning: the candidate as assembled from its distilled stages (BatchNorm recalibrated). "
            "Training time: stage-wise step + fine-tuning.</p>")
    return f'<div class="scroll"><table id="pareto-table"><thead><tr>{header}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>{note}'


def _stage_table(data: ReportData) -> str:
    head = ["stage", "k", "blocks only", "best Global layer", "one more block", "verdict"]
    rows = []
    for c in data.stages.choices:
        cells = [
            f"<td>{_e(c.stage)}</td>", _num(str(c.keep)),
            f"<td>{_variant_cell(c.blocks, None, None)}</td>",
            f"<td>{_variant_cell(c.best_global, c.global_added_mmacs, c.global_gain)}"
            + (f"<br><span class=\"note\">best of {c.globals_tried}</span>" if c.globals_tried > 1 else "") + "</td>",
            f"<td>{_variant_cell(c.more_blocks, c.block_added_mmacs, c.block_gain)}</td>",
            f"<td>{_e(c.verdict)}</td>",
        ]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    header = "".join(f"<th>{_e(h)}</th>" for h in head)
    return f'<div class="scroll"><table id="stage-table"><thead><tr>{header}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def _variant_cell(v: StageVariantSummary | None, added: float | None, gain: float | None) -> str:
    if v is None:
        return '<span class="note">not tried</span>'
    lines = [v.text, *v.figures()]
    if added is not None:
        lines.append(f"adds {added:.3g}M MACs")
    if gain is not None:
        lines.append(f"{gain:.3g} loss less per extra MMAC")
    return "<br>".join(map(_e, lines))


def _plan_cell(lines: list[str]) -> str:
    """The plan a stage a line."""
    return "<br>".join(_e(line) for line in lines) if lines else "(no plan recorded)"


def _failures(trials: Sequence[TrialSummary]) -> str:
    failed = [(str(t.number), t.failure or "") for t in trials if t.state == TrialState.FAIL]
    if not failed:
        return ""
    return "<h2>Failed trials</h2>" + _rows_table(("trial", "reason"), failed)


def _rows_table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    header = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{_e(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"


def _objective_value(name: str, value: float) -> str:
    if name == "accuracy":
        return fmt.percent(value)
    if name == "latency":
        return fmt.milliseconds(value)
    return fmt.count(value)


def _num(text: str) -> str:
    return f'<td class="n">{_e(text)}</td>'


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)
