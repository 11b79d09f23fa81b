"""``--trial``: numbers, the pareto:* shortcuts, and the one-line errors."""

from __future__ import annotations

import pytest

from pdenas.report import ReportData, ReportError, build_report_data, select_trial

from .report_studies import Costs, StudyBuilder


@pytest.fixture(scope="module")
def known_front(tmp_path_factory: pytest.TempPathFactory) -> StudyBuilder:
    """A study whose picks are known by hand.

    Candidates on the front (accuracy, MACs): #1 (0.94, 50), #2 (0.90, 20), #3 (0.60, 10). Min-max
    normalised over them, the distances to the ideal corner are 1.0, hypot(0.25, 0.04 / 0.34) = 0.276
    and 1.0: the knee is #2. The original (#0, 0.95 at 100) is on the front but never a pick; #4 is
    dominated; #5 is infeasible with 5 MACs, which would otherwise be the smallest.
    """
    builder = StudyBuilder(tmp_path_factory.mktemp("known") / "study", original=None, max_macs=100.0)
    builder.add_reference(accuracy=0.95, costs=Costs(100, 1000, 100))
    builder.add_candidate(keeps={"layer1": 4}, accuracy=0.94, costs=Costs(50, 500, 50))
    builder.add_candidate(keeps={"layer1": 2}, accuracy=0.90, costs=Costs(20, 200, 20))
    builder.add_candidate(keeps={"layer1": 1}, accuracy=0.60, costs=Costs(10, 100, 10))
    builder.add_candidate(keeps={"layer2": 1}, accuracy=0.50, costs=Costs(60, 600, 60))
    builder.max_macs = 1.0
    builder.add_candidate(keeps={"layer3": 1}, accuracy=0.99, costs=Costs(5, 50, 5))
    builder.add_failure("CUDA out of memory")
    builder.add_running()
    return builder


def test_shortcuts_pick_the_known_trials(known_front: StudyBuilder) -> None:
    study = known_front.study
    assert select_trial(study, "pareto:best-accuracy").number == 1
    assert select_trial(study, "pareto:smallest").number == 3
    assert select_trial(study, "pareto:knee").number == 2
    assert select_trial(study, " PARETO:KNEE ").number == 2
    data = build_report_data(study)
    assert data.picks == {"pareto:best-accuracy": 1, "pareto:smallest": 3, "pareto:knee": 2}
    assert {t.number for t in data.pareto} == {0, 1, 2, 3}


def test_shortcuts_agree_with_the_report(search_study: StudyBuilder, search_data: ReportData) -> None:
    for name, number in search_data.picks.items():
        assert select_trial(search_study.study, name).number == number
    pareto = [t for t in search_data.pareto if not t.reference]
    assert search_data.picks["pareto:best-accuracy"] == max(pareto, key=lambda t: t.accuracy).number
    assert search_data.picks["pareto:smallest"] == min(pareto, key=lambda t: t.macs).number


def test_numbers(known_front: StudyBuilder) -> None:
    assert select_trial(known_front.study, 2).number == 2
    assert select_trial(known_front.study, "3").number == 3
    assert select_trial(known_front.study, 0).number == 0  # the original may be chosen by number


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (42, "trial 42 does not exist in study 'pdenas' (it has trials 0-7): pick a completed feasible trial"),
        ("pareto:best", "unknown trial 'pareto:best': give a trial number or one of pareto:best-accuracy, pareto:smallest, pareto:knee"),
        ("-1", "unknown trial '-1'"),
        (6, "trial 6 failed (CUDA out of memory): pick a completed feasible trial, e.g. --trial pareto:knee"),
        (7, "trial 7 is running, not complete: wait for it to finish or pick a completed feasible trial"),
        (5, "trial 5 is infeasible, it broke a constraint (max_macs = +4), so it was never trained"),
    ],
)
def test_errors_are_one_line(known_front: StudyBuilder, spec: str | int, message: str) -> None:
    with pytest.raises(ReportError) as info:
        select_trial(known_front.study, spec)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_shortcut_without_candidates(study_builder, tiny_costs) -> None:
    builder = study_builder(original=tiny_costs["resnet_tiny"])
    with pytest.raises(ReportError, match="pareto:knee has nothing to choose from: no feasible trial has completed yet"):
        select_trial(builder.study, "pareto:knee")
    builder.add_reference(accuracy=0.9, costs=tiny_costs["resnet_tiny"])
    with pytest.raises(ReportError, match="only the original model is on the Pareto front so far"):
        select_trial(builder.study, "pareto:smallest")
