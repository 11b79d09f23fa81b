"""The report's data: Pareto set, table order, ratios, hypervolume, importances, plan words, fronts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from optuna._hypervolume import compute_hypervolume
from optuna.trial import TrialState

from pdenas.report import ReportData, ReportError, build_report_data
from pdenas.search import TrialRecord

from .report_studies import STAGES, Costs, StudyBuilder

record = TrialRecord.from_trial


def _dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """a dominates b: accuracy (maximised) and cost (minimised) no worse, one strictly better."""
    return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])


def _brute_force_front(points: dict[int, tuple[float, float]]) -> set[int]:
    return {n for n, p in points.items() if not any(_dominates(q, p) for m, q in points.items() if m != n)}


def _feasible_completed(builder: StudyBuilder) -> list:
    return [
        t for t in builder.study.trials
        if t.state == TrialState.COMPLETE and all(v <= 0 for v in t.constraints.values())
    ]


def test_pareto_set_is_the_non_dominated_feasible_completed_trials(search_study: StudyBuilder, search_data: ReportData) -> None:
    data = search_data
    points = {t.number: (t.values[0], t.values[1]) for t in _feasible_completed(search_study)}
    expected = _brute_force_front(points)
    assert {t.number for t in data.pareto} == expected
    assert expected  # the fixture has a front
    by_number = {t.number: t for t in search_study.study.trials}
    for row in data.pareto:
        trial = by_number[row.number]
        assert trial.state == TrialState.COMPLETE and record(trial).feasible
    # the infeasible heavy candidate recorded accuracy 0 but the highest MACs: never on the front,
    # and an infeasible trial with tiny MACs would be: check feasibility is what keeps it out
    infeasible = [t for t in search_study.study.trials if record(t).feasible is False]
    assert infeasible and all(t.number not in {r.number for r in data.pareto} for t in infeasible)


def test_infeasible_trial_with_tiny_macs_stays_off_the_front(study_builder, tiny_costs) -> None:
    original = tiny_costs["resnet_tiny"]
    builder = study_builder(original=original, max_macs=original.macs * 0.9)
    builder.add_candidate(keeps={"layer1": 1}, accuracy=0.9, costs=Costs(original.macs // 2, original.params // 2, 1))
    # over a (stricter) limit, with MACs and a recorded objective that would dominate trial 0 if it counted
    builder.max_macs = 1000.0
    builder.add_candidate(keeps={"layer1": 1, "layer2": 1}, accuracy=0.99, costs=Costs(2000, 10, 10))
    data = build_report_data(builder.study)
    assert [t.number for t in data.pareto] == [0]
    assert data.trial(1).feasible is False and data.trial(1).accuracy is None


def test_table_is_sorted_by_macs_with_ratios_to_the_original(search_data: ReportData, tiny_costs) -> None:
    data = search_data
    original = tiny_costs["resnet_tiny"]
    assert data.original.trial_number == 0
    assert data.original.macs == original.macs and data.original.params == original.params
    assert data.original.accuracy == pytest.approx(0.9312)
    macs = [t.macs for t in data.pareto]
    assert macs == sorted(macs)
    for row in data.pareto:
        assert row.macs_ratio == pytest.approx(original.macs / row.macs)
        assert row.params_ratio == pytest.approx(original.params / row.params)
        assert row.accuracy_delta == pytest.approx(row.accuracy - 0.9312)
        assert row.train_time is not None
    frame = data.pareto_frame()
    assert list(frame["number"]) == [t.number for t in data.pareto]
    assert list(frame["macs"]) == macs


def test_real_global_counterpart_ratio(search_data: ReportData, tiny_costs) -> None:
    """Trial 1 is the paper-style resnet_tiny_global, costed by pdenas.cost.profile."""
    data = search_data
    row = data.trial(1)
    expected = tiny_costs["resnet_tiny"].macs / tiny_costs["resnet_tiny_global"].macs
    assert row.macs_ratio == pytest.approx(expected)
    assert row.plan_text.startswith("layer1: keep 1 + Global K=5 dt=0.2;")


def test_original_costs_fall_back_to_the_study_attribute(study_builder, tiny_costs) -> None:
    original = tiny_costs["resnet_tiny"]
    builder = study_builder(original=original)  # no reference trial
    builder.add_candidate(keeps={"layer1": 1}, accuracy=0.9, costs=Costs(original.macs // 4, original.params // 2, 1))
    data = build_report_data(builder.study)
    assert data.original.trial_number is None and data.original.accuracy is None
    assert data.original.macs == original.macs
    assert data.trial(0).macs_ratio == pytest.approx(original.macs / (original.macs // 4))
    assert data.trial(0).accuracy_delta is None


def test_counts_and_failures(search_data: ReportData) -> None:
    data = search_data
    assert data.counts == {"total": 30, "complete": 27, "feasible": 26, "infeasible": 1, "failed": 2, "stopped": 0, "other": 1}
    failed = [t for t in data.trials if t.state == TrialState.FAIL]
    assert failed[0].failure.startswith("training diverged")
    reused = [t for t in data.trials if t.reused_from is not None]
    assert len(reused) == 1 and reused[0].reused_from == 1


def test_hypervolume_is_optunas_non_decreasing_and_uses_the_original_as_reference(
    search_study: StudyBuilder, search_data: ReportData, tiny_costs
) -> None:
    data = search_data
    history = data.hypervolume
    assert history is not None and data.hypervolume_reason is None
    complete = [t.number for t in search_study.study.trials if t.state == TrialState.COMPLETE]
    assert list(history.trial_numbers) == complete
    assert all(b >= a for a, b in zip(history.values, history.values[1:], strict=False))
    assert len(history.compute) == len(complete)
    assert all(b >= a for a, b in zip(history.compute, history.compute[1:], strict=False))
    original = tiny_costs["resnet_tiny"]
    assert history.reference_point == {"accuracy": 0.0, "macs": pytest.approx(1.1 * original.macs)}
    assert history.box_volume == pytest.approx(1.0 * 1.1 * original.macs)
    # the last value is Optuna's hypervolume of the final front, in the minimisation space
    front = np.array([[-t.accuracy, t.macs] for t in data.pareto])
    reference = np.array([0.0, 1.1 * original.macs])
    assert history.final == pytest.approx(compute_hypervolume(front, reference) / history.box_volume)
    assert 0.0 < history.values[0] <= history.final <= 1.0  # the original alone already counts


def test_hypervolume_compute_counts_every_finished_trial_up_to_each_point(study_builder, tiny_costs) -> None:
    """Worker-seconds: a completed or stopped trial's wall time, a failed one's Optuna duration, running ones none."""
    original = tiny_costs["resnet_tiny"]
    builder = study_builder(original=original)
    half = Costs(original.macs // 2, original.params // 2, original.conv_macs // 2)
    builder.add_reference(accuracy=0.9, costs=original, wall_time=10.0)  # 0
    builder.add_candidate(keeps={"layer1": 1}, accuracy=0.85, costs=half, wall_time=20.0)  # 1
    builder.add_stopped(wall_time=5.0)  # 2: a rung's loser costs what it ran
    builder.add_failure("training diverged")  # 3: no wall time recorded, its start-to-end time counts
    builder.add_running()  # 4: not finished, not counted
    builder.add_candidate(keeps={"layer1": 2}, accuracy=0.88, costs=half, wall_time=30.0)  # 5
    failed = builder.study.trials[3].duration.total_seconds()
    history = build_report_data(builder.study, importances=False).hypervolume
    assert history.trial_numbers == (0, 1, 5)
    assert history.compute == pytest.approx((10.0, 30.0, 65.0 + failed))
    assert failed < 1.0


def test_hypervolume_reason_without_feasible_trials(study_builder, tiny_costs) -> None:
    builder = study_builder(original=tiny_costs["resnet_tiny"])
    builder.add_failure("out of memory")
    data = build_report_data(builder.study)
    assert data.hypervolume is None
    assert "No feasible trial has completed yet" in data.hypervolume_reason
    assert data.pareto == () and data.picks == {}


def test_importances_reason_when_too_few_trials(study_builder, tiny_costs) -> None:
    original = tiny_costs["resnet_tiny"]
    builder = study_builder(original=original)
    builder.add_reference(accuracy=0.93, costs=original)
    for keep in (1, 2, 3):
        builder.add_candidate(keeps={"layer1": keep}, accuracy=0.8 + keep / 100, costs=Costs(original.macs * keep // 5, 1000, 1))
    data = build_report_data(builder.study)
    assert data.importances.by_objective == {}
    assert data.importances.reason == (
        "Importances need at least 10 feasible completed trials and this study has 4; run more trials to see which choices matter."
    )


def test_importances_per_objective_from_optuna(search_data: ReportData) -> None:
    data = search_data
    assert data.importances.reason is None
    assert set(data.importances.by_objective) == {"accuracy", "macs"}
    for importances in data.importances.by_objective.values():
        assert sum(importances.values()) == pytest.approx(1.0)
        assert {f"{stage}.keep" for stage in STAGES} <= set(importances)


def test_fronts_against_each_cost(search_data: ReportData) -> None:
    data = search_data
    assert set(data.fronts) == {"macs", "params", "latency"}
    trained = {t.number: t for t in data.trials if t.complete and t.feasible}
    for cost in ("macs", "params", "latency"):
        expected = _brute_force_front({n: (t.accuracy, t.measured(cost)) for n, t in trained.items()})
        numbers = data.fronts[cost].numbers
        assert set(numbers) == expected
        costs = [data.trial(n).measured(cost) for n in numbers]
        assert costs == sorted(costs)
    # accuracy and MACs are the study's objectives: the MACs front is the Pareto set (duplicates aside)
    assert set(data.fronts["macs"].numbers) == {t.number for t in data.pareto}


def test_fronts_only_for_recorded_costs(study_builder, tiny_costs) -> None:
    original = tiny_costs["resnet_tiny"]
    builder = study_builder(original=original)
    builder.add_reference(accuracy=0.93, costs=original)  # no latency measured
    data = build_report_data(builder.study)
    assert set(data.fronts) == {"macs", "params"}


def test_plan_text_falls_back_to_the_plan(study_builder, tiny_costs) -> None:
    """A trial that stored its plan but not the words gets CompressionPlan's words for it."""
    original = tiny_costs["resnet_tiny"]
    builder = study_builder(original=original)
    builder.add_candidate(
        keeps={"layer1": 1}, globals_={"layer1": (3, 0.21)}, accuracy=0.9, costs=Costs(100, 10, 10), plan_text=None
    )
    data = build_report_data(builder.study)
    assert data.trial(0).plan_text == "layer1: keep 1 + Global K=3 dt=0.21; layer2: keep 5; layer3: keep 5; layer4: keep 5"


def test_settings(search_study: StudyBuilder, search_data: ReportData) -> None:
    data = search_data
    settings = dict(data.settings)
    assert settings["model"] == "resnet_tiny" and data.model == "resnet_tiny"
    assert settings["data"] == "digits"
    assert settings["search space file"] == "search_spaces/default.yaml"
    assert settings["seed"] == "0"
    assert settings["budget"] == "epochs: 6, batch_size: 64"
    assert settings["storage"] == f"journal file {search_study.directory / 'study.log'}"
    assert {"pdenas version", "torch version", "optuna version"} <= set(settings)


def test_objectives_must_be_named(tmp_path) -> None:
    import optuna

    study = optuna.create_study(directions=["maximize", "minimize"], study_name="foreign")
    with pytest.raises(ReportError, match="was not created by pdenas search"):
        build_report_data(study)


def test_three_objectives(study_builder, tiny_costs) -> None:
    original = tiny_costs["resnet_tiny"]
    builder = study_builder(original=original, objectives=("accuracy", "macs", "latency"))
    builder.add_reference(accuracy=0.93, costs=original, latency_ms=2.0)
    builder.add_candidate(keeps={"layer1": 1}, accuracy=0.92, costs=Costs(original.macs // 2, 10, 1), latency_ms=2.5)
    builder.add_candidate(keeps={"layer1": 2}, accuracy=0.91, costs=Costs(original.macs // 3, 10, 1), latency_ms=3.0)
    data = build_report_data(builder.study)
    assert data.objectives == ("accuracy", "macs", "latency")
    assert {t.number for t in data.pareto} == {0, 1, 2}
    assert data.hypervolume.reference_point["latency"] == pytest.approx(2.2)
    assert math.isclose(data.trial(1).latency_speedup, 0.8)
