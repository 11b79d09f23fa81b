"""What the report writes: report.html (self-contained, escaped), trials.csv, pareto.csv, the terminal table."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from pdenas.report import ReportData, ReportError, build_report_data, print_pareto, write_report
from pdenas.report._figures import front_figure, hypervolume_figure, importance_figure

from .report_studies import Costs, StudyBuilder

MALICIOUS = "<script>alert(1)</script>"


def test_files_written(written_report: Path) -> None:
    assert written_report.name == "report.html"
    assert {p.name for p in written_report.parent.iterdir()} >= {"report.html", "trials.csv", "pareto.csv"}


def test_trials_csv_has_a_row_per_trial(written_report: Path, search_study: StudyBuilder) -> None:
    frame = pd.read_csv(written_report.parent / "trials.csv")
    assert len(frame) == len(search_study.study.trials) == 30
    assert list(frame["number"]) == list(range(30))
    expected = {
        "number", "state", "feasible", "values_accuracy", "values_macs", "params_layer1.keep", "params_layer1.global",
        "user_attrs_accuracy", "user_attrs_macs", "user_attrs_params", "user_attrs_plan", "user_attrs_plan_text",
        "user_attrs_train_time", "constraint_max_macs", "failure", "duration",
    }
    assert expected <= set(frame.columns)
    assert not any(c.startswith("system_attrs") for c in frame.columns)
    assert set(frame["state"]) == {"COMPLETE", "FAIL", "RUNNING"}
    failed = frame[frame["state"] == "FAIL"]
    assert failed["failure"].str.startswith("training diverged").any()
    plan = json.loads(frame.loc[1, "user_attrs_plan"])  # written as JSON, so it reads back
    assert plan["stages"]["layer1"]["keep"] == 1
    infeasible = frame[frame["feasible"] == False]  # noqa: E712  (a column of True/False/NaN)
    assert len(infeasible) == 1 and (infeasible["constraint_max_macs"] > 0).all()


def test_pareto_csv_is_the_table(written_report: Path, search_data: ReportData) -> None:
    frame = pd.read_csv(written_report.parent / "pareto.csv")
    assert list(frame["number"]) == [t.number for t in search_data.pareto]
    assert list(frame["macs"]) == sorted(frame["macs"])
    assert {"plan", "accuracy", "macs", "params", "macs_ratio", "params_ratio", "train_time", "picks"} <= set(frame.columns)
    assert frame["macs_ratio"].tolist() == pytest.approx([t.macs_ratio for t in search_data.pareto])


def test_html_embeds_plotly_once_and_no_cdn(written_report: Path) -> None:
    page = written_report.read_text(encoding="utf-8")
    assert page.count("* plotly.js v") == 1  # the library's licence header: embedded, once
    assert "Plotly.newPlot" in page
    assert len(re.findall(r'Plotly\.newPlot\(\s*"', page)) == 5  # 3 fronts, hypervolume, importances
    assert not re.search(r"<script[^>]+src=", page)
    assert not re.search(r"<link[^>]+href=\"?https?:", page)


def test_html_holds_the_trial_data(written_report: Path, search_data: ReportData) -> None:
    page = written_report.read_text(encoding="utf-8")
    for row in search_data.pareto:
        for stage in row.plan_text.split("; "):
            assert stage in page
        assert f'<td class="n">{row.number}</td>' in page
    assert 'id="pareto-table"' in page
    assert "training diverged (loss is NaN at epoch 2)" in page
    assert "optuna version" in page and "resnet_tiny" in page


def test_figures_draw_the_data(search_data: ReportData) -> None:
    fig = front_figure(search_data, "macs")
    traces = {trace.name: trace for trace in fig.data}
    assert list(traces["Pareto front"].x) == [search_data.trial(n).macs for n in search_data.fronts["macs"].numbers]
    assert traces["Pareto front"].line.shape == "hv"
    assert fig.layout.xaxis.type == "log"
    assert len(traces["infeasible (untrained, drawn at the bottom)"].x) == 1
    assert len(traces["original model"].x) == 1
    shown = sum(len(t.x) for t in fig.data)
    assert shown == sum(1 for t in search_data.trials if t.complete)  # every completed trial, once
    hover = " ".join(traces["Pareto front"].hovertext)
    assert "x smaller" in hover and "accuracy " in hover and "params " in hover
    hypervolume = hypervolume_figure(search_data).data[0]
    assert list(hypervolume.y) == list(search_data.hypervolume.values)
    assert list(hypervolume.x) == pytest.approx([s / 60 for s in search_data.hypervolume.compute])  # worker-minutes
    assert list(hypervolume.customdata) == list(search_data.hypervolume.trial_numbers)
    assert {t.name for t in importance_figure(search_data).data} == {"for accuracy", "for MACs"}


def test_user_text_is_escaped(study_builder, tiny_costs, tmp_path: Path) -> None:
    original = tiny_costs["resnet_tiny"]
    builder = study_builder("evil<b>dir", model=MALICIOUS, original=original, extra_config={"dataset": "<img src=x onerror=alert(2)>"})
    builder.add_reference(accuracy=0.93, costs=original)
    builder.add_candidate(keeps={"layer1": 1}, accuracy=0.9, costs=Costs(original.macs // 2, 100, 1), plan_text="layer1: <i>keep</i> 1")
    builder.add_failure("<script>alert(3)</script>")
    page = write_report(builder.directory, tmp_path / "out").read_text(encoding="utf-8")
    for raw in (MALICIOUS, "<img src=x", "<script>alert(3)", "evil<b>dir", "<i>keep</i>"):
        assert raw not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<title>pdenas report: &lt;script&gt;alert(1)&lt;/script&gt;</title>" in page
    assert "evil&lt;b&gt;dir" in page
    assert "layer1: &lt;i&gt;keep&lt;/i&gt; 1" in page


def test_write_report_needs_a_folder_for_a_study_object(search_study: StudyBuilder) -> None:
    with pytest.raises(ReportError, match="write_report\\(study\\) needs out_dir"):
        write_report(search_study.study)


def test_report_of_an_empty_study(study_builder, tiny_costs, tmp_path: Path) -> None:
    builder = study_builder(original=tiny_costs["resnet_tiny"])
    page = write_report(builder.study, tmp_path / "empty").read_text(encoding="utf-8")
    assert "No feasible trial has completed yet" in page
    assert pd.read_csv(tmp_path / "empty" / "trials.csv").empty


@pytest.mark.parametrize("width", [80, 200])
def test_terminal_table(search_data: ReportData, width: int) -> None:
    console = Console(record=True, width=width, color_system=None)
    print_pareto(search_data, console)
    text = console.export_text()
    assert "…" not in text  # nothing cut off, even in 80 columns
    knee = search_data.trial(search_data.picks["pareto:knee"])
    lines = text.splitlines()
    row = next(i for i, line in enumerate(lines) if line.split()[:1] == [str(knee.number)])
    assert lines[row].rstrip().endswith("knee")
    assert f"{100 * knee.accuracy:.2f}%" in lines[row] and f"{knee.macs_ratio:.2f}x" in lines[row + 1]
    assert "--trial pareto:<pick>" in " ".join(text.split())
    for stage in (stage for t in search_data.pareto for stage in t.plan_text.split("; ")):
        assert stage in text or width == 80  # 80 columns may wrap a stage's words over two lines
    assert ("latency" in text) == (width == 200)


def test_terminal_prints_study_text_literally(study_builder, tiny_costs) -> None:
    original = tiny_costs["resnet_tiny"]
    builder = study_builder(original=original)
    builder.add_candidate(keeps={"layer1": 1}, accuracy=0.9, costs=Costs(100, 10, 1), plan_text="[bold]layer1[/bold]: keep 1")
    console = Console(record=True, width=200, color_system=None)
    print_pareto(build_report_data(builder.study), console)
    assert "[bold]layer1[/bold]: keep 1" in console.export_text()


def test_terminal_without_a_front(study_builder, tiny_costs) -> None:
    console = Console(record=True, width=200, color_system=None)
    print_pareto(build_report_data(study_builder(original=tiny_costs["resnet_tiny"]).study), console)
    assert "No feasible trial has completed yet" in console.export_text()
