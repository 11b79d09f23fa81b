"""Latency in the runtime the user deploys to (issue 14 item 3): a real search with a ``latency`` objective
measured in ONNX Runtime, end to end on digits, and its report's latency front named after the runtime."""

from __future__ import annotations

import sys

import pytest
import torch

from pdenas.report import build_report_data, open_study, write_report
from pdenas.search import SearchConfig, SearchConfigError, StudyLocation, StudyRecord, TrialRecord, search

pytestmark = pytest.mark.filterwarnings("ignore:.*is deprecated:FutureWarning")

LATENCY = """\
objectives: [accuracy, latency]
latency:
  runtime: onnxruntime
  batch_size: 2
  threads: 1
"""


def test_a_latency_objective_in_onnxruntime_runs_end_to_end_and_is_reported(tiny_yaml, tmp_path, one_thread):
    pytest.importorskip("onnxruntime")
    config = SearchConfig.from_yaml(tiny_yaml(trials=3, subset=120, extra=LATENCY))
    assert config.measures_latency and config.latency.runtime == "onnxruntime"
    result = search(config, location=StudyLocation(tmp_path / "study"))
    assert result.completed == 3 and result.failed == 0

    study = open_study(tmp_path / "study")
    records = [TrialRecord.from_trial(t) for t in study.trials]
    for r in records:
        assert (r.latency_runtime, r.latency_batch_size, r.latency_threads) == ("onnxruntime", 2, 1), r.number
        assert r.latency_ms is not None and r.latency_ms > 0
        assert r.values == (r.accuracy, r.latency_ms)  # the objective is the recorded latency
        assert 0 < r.latency_time < r.wall_time  # measuring it is part of the trial, and not all of it
    # the original is measured once, by its own trial, and every comparison uses that figure
    original = StudyRecord.from_study(study).original
    assert original.latency_ms == records[0].latency_ms and records[0].reference

    data = build_report_data(study, importances=False)
    assert data.latency_setup == "onnxruntime, batch 2, 1 thread"
    front = data.fronts["latency"]
    assert front.label == "latency (ms; onnxruntime, batch 2, 1 thread)"
    on_front = [data.trial(n) for n in front.numbers]
    assert on_front and all(t.latency_ms is not None for t in on_front)
    assert [t.latency_ms for t in on_front] == sorted(t.latency_ms for t in on_front)
    others = [t for t in data.trials if t.number not in front.numbers]
    for t in others:  # off the front: some front trial is at least as fast and as accurate
        assert any(f.latency_ms <= t.latency_ms and f.accuracy >= t.accuracy for f in on_front), t.number
    pareto = data.pareto_frame()
    assert set(pareto["latency_runtime"]) == {"onnxruntime"} and set(pareto["latency_batch_size"]) == {2}

    page = write_report(tmp_path / "study").read_text()
    assert "Accuracy against latency in onnxruntime, batch 2, 1 thread" in page
    assert "latency (onnxruntime, batch 2, 1 thread)" in page  # the Pareto table's column
    assert "latency (ms; onnxruntime, batch 2, 1 thread) (log scale)" in page  # the figure's axis


def test_a_runtime_that_is_not_installed_is_refused_before_any_work(tiny_yaml, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    config = SearchConfig.from_yaml(tiny_yaml(extra=LATENCY))
    with pytest.raises(SearchConfigError, match=r"^'latency.runtime': runtime 'onnxruntime' needs onnxruntime: "
                                                r"pip install 'pdenas\[onnx\]'$"):
        search(config, location=StudyLocation(tmp_path / "study"))
    assert not (tmp_path / "study").exists()
    # without measuring latency, the section does not matter
    quiet = SearchConfig.from_yaml(tiny_yaml(extra="latency:\n  runtime: onnxruntime\n", name="quiet.yaml"))
    assert not quiet.measures_latency


def test_measure_latency_in_torch_records_how_it_was_measured(tiny_yaml, tmp_path, one_thread):
    """``measure_latency: true`` with the default section: eager PyTorch, batch 1, the worker's threads."""
    config = SearchConfig.from_yaml(tiny_yaml(trials=2, subset=60, extra="measure_latency: true\n"))
    assert search(config, location=StudyLocation(tmp_path / "study")).completed == 2
    records = [TrialRecord.from_trial(t) for t in open_study(tmp_path / "study").trials]
    assert [(r.latency_runtime, r.latency_batch_size, r.latency_threads) for r in records] == [("torch", 1, torch.get_num_threads())] * 2
    assert all(r.values is not None and len(r.values) == 2 for r in records)  # latency measured, not an objective
