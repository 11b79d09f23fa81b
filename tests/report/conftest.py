"""Fixtures: the report tests' studies (see ``report_studies``), the tiny models' real costs, and the
report of a finished-looking search, built once per session."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest

from pdenas.report import ReportData, build_report_data
from .report_studies import BLOCKS, STAGES, Costs, StudyBuilder, synthetic_costs

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="session")
def tiny_costs() -> dict[str, Costs]:
    """Real costs of the original model and of its paper-style Global counterpart (profiled once)."""
    from pdenas import create_model
    from pdenas.cost import profile

    costs = {}
    for name in ("resnet_tiny", "resnet_tiny_global"):
        cost = profile(create_model(name))
        costs[name] = Costs(cost.macs, cost.params, cost.conv_macs)
    return costs


@pytest.fixture
def study_builder(tmp_path: Path) -> Callable[..., StudyBuilder]:
    def make(name: str = "study", **options: Any) -> StudyBuilder:
        return StudyBuilder(tmp_path / name, **options)

    return make


@pytest.fixture(scope="session")
def search_study(tmp_path_factory: pytest.TempPathFactory, tiny_costs: dict[str, Costs]) -> StudyBuilder:
    """A finished-looking search: reference, 24 candidates, a reuse, 2 failures, an infeasible and a running trial.

    Built once per session (a journal study takes seconds to fill): tests only read it.
    """
    original = tiny_costs["resnet_tiny"]
    builder = StudyBuilder(
        tmp_path_factory.mktemp("search") / "study", original=original, max_macs=float(original.macs), objectives=("accuracy", "macs")
    )
    builder.add_reference(accuracy=0.9312, costs=original, latency_ms=2.0)
    # the paper's Global counterpart, with its real profiled cost
    paper_globals = {stage: (5, 0.2) for stage in STAGES[:3]}
    first = builder.add_candidate(
        keeps={stage: 1 for stage in STAGES}, globals_=paper_globals, accuracy=0.9105, costs=tiny_costs["resnet_tiny_global"],
        latency_ms=1.1,
    )
    rng = random.Random(0)
    for _ in range(23):
        keeps = {stage: rng.randint(1, BLOCKS) for stage in STAGES}
        globals_ = {stage: (rng.randint(1, 5), round(rng.uniform(0.05, 0.5), 2)) for stage in STAGES if rng.random() < 0.5}
        costs = synthetic_costs(original, keeps, globals_)
        kept = sum(keeps.values()) / (BLOCKS * len(STAGES))
        accuracy = 0.80 + 0.12 * math.sqrt(kept) + 0.01 * len(globals_) + rng.uniform(-0.01, 0.01)
        builder.add_candidate(keeps=keeps, globals_=globals_, accuracy=min(accuracy, 0.95), costs=costs, latency_ms=2.0 * costs.macs / original.macs)
    builder.add_candidate(
        keeps={stage: 1 for stage in STAGES}, globals_=paper_globals, accuracy=0.9105, costs=tiny_costs["resnet_tiny_global"],
        latency_ms=1.1, reused_from=first,
    )
    builder.add_failure("training diverged (loss is NaN at epoch 2); lower the learning rate")
    builder.add_failure("the worker running it died (stale trial); re-queued")
    # all blocks kept and Global layers added: more MACs than the original, over the max_macs limit
    heavy = Costs(int(original.macs * 1.3), int(original.params * 1.2), int(original.conv_macs * 1.1))
    builder.add_candidate(keeps={}, globals_={stage: (4, 0.1) for stage in STAGES}, accuracy=0.95, costs=heavy, latency_ms=2.6)
    builder.add_running()
    return builder


@pytest.fixture(scope="session")
def search_data(search_study: StudyBuilder) -> ReportData:
    """The report data of ``search_study`` (computed once; ReportData is immutable)."""
    return build_report_data(search_study.study, study_dir=search_study.directory)


@pytest.fixture(scope="session")
def written_report(search_study: StudyBuilder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """report.html (and the CSV files beside it) of ``search_study``, written once by ``write_report``."""
    from pdenas.report import write_report

    return write_report(search_study.directory, tmp_path_factory.mktemp("report"))
