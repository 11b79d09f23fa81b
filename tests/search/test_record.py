"""The trial and study records: every field survives a round trip through a real study on disk, a study
folder written by pdenas 0.1.0 opens unchanged, and no other module touches pdenas' Optuna user attributes."""

from __future__ import annotations

import dataclasses
import re
import shutil
import typing
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from pdenas.report import build_report_data, open_study
from pdenas.search import (
    FORMAT_VERSION,
    RungRecord,
    SearchConfig,
    StageRecord,
    StudyLocation,
    StudyRecord,
    TrialRecord,
    open_storage,
    pareto_trials,
)

ROOT = Path(__file__).resolve().parents[2]
OLD_STUDY = Path(__file__).parent / "data" / "study-0.1.0"
PLAN = {"format_version": 1, "stages": {"layer1": {"keep": 1, "global_layer": None}, "layer2": {"keep": 5, "global_layer": None}}}
RECORDED = [f for f in dataclasses.fields(TrialRecord) if "key" in f.metadata]


def _sample(name: str, hint: typing.Any, index: int) -> typing.Any:
    """A value for a recorded field of type ``hint`` that differs from the field's default."""
    if type(None) in typing.get_args(hint):  # X | None: a sample of X
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    samples = {
        bool: lambda: not TrialRecord.__dataclass_fields__[name].default,
        int: lambda: 7 + index,
        float: lambda: 0.25 + index,
        str: lambda: f"text of {name}",
    }
    if hint in samples:
        return samples[hint]()
    if typing.get_origin(hint) is dict and name == "plan":
        return PLAN
    if typing.get_origin(hint) is dict and name == "stages":
        return {"layer1": StageRecord(key="layer1-keep1-global-abc", keep=1, global_layer={"iterations": 1, "dt": 0.2},
                                      loss=0.41, mse=0.2, initial_loss=0.9, reused=False, train_time=3.5, macs=12345),
                "layer2": StageRecord(key="layer2-keep2-blocks-def", keep=2, global_layer=None, loss=0.3, mse=0.1,
                                      initial_loss=0.5, reused=True, train_time=1.0)}
    if hint == tuple[int, int]:
        return (3, 4)
    if name == "rungs":
        return (RungRecord(rung=0, images=0, score=(3.5, 1e6), go_on=True, position=0, of=1, stage_loss=3.5),
                RungRecord(rung=1, images=2048, score=(-0.5, 1e6), go_on=False, position=3, of=4, accuracy=0.5))
    raise AssertionError(f"add a sample value for TrialRecord.{name} ({hint}) to this test")


def _samples() -> dict[str, typing.Any]:
    hints = typing.get_type_hints(TrialRecord)
    return {f.name: _sample(f.name, hints[f.name], i) for i, f in enumerate(RECORDED)}


def _journal_study(directory: Path) -> optuna.Study:
    return optuna.create_study(storage=open_storage(StudyLocation(directory), create=True), study_name="pdenas",
                               directions=["maximize", "minimize"])


def _reload(directory: Path) -> optuna.Study:
    """The study read back through a storage of its own (nothing cached from the writer)."""
    return optuna.load_study(study_name="pdenas", storage=open_storage(StudyLocation(directory)))


def test_every_trial_field_survives_a_round_trip_through_a_study_on_disk(tmp_path):
    values = _samples()
    study = _journal_study(tmp_path)
    trial = study.ask()
    for name, value in values.items():  # one field at a time, as a running search writes them
        TrialRecord.write(trial, **{name: value})
    trial.set_constraint("max_macs", -5.0)
    study.tell(trial, [0.5, 1000.0])
    queued = {name: values[name] for name in ("retry_of", "reference")}
    study.enqueue_trial({}, user_attrs=TrialRecord.attrs(**queued))

    first, second = (TrialRecord.from_trial(t) for t in _reload(tmp_path).trials)
    for name, value in values.items():
        assert getattr(first, name) == value, name
    assert first.number == 0 and first.state == TrialState.COMPLETE and first.values == (0.5, 1000.0)
    assert first.constraints == {"max_macs": -5.0}
    assert (second.retry_of, second.reference, second.state) == (values["retry_of"], True, TrialState.WAITING)


def test_fields_written_to_the_storage_and_for_retries(tmp_path):
    study = _journal_study(tmp_path)
    study.enqueue_trial({}, user_attrs=TrialRecord.attrs(reference=True))
    trial = study.ask()
    storage = open_storage(StudyLocation(tmp_path))
    TrialRecord.write_to_storage(storage, storage.get_trial_id_from_study_id_trial_number(0, trial.number), failure="gone")
    record = TrialRecord.from_trial(_reload(tmp_path).trials[0])
    assert record.failure == "gone" and record.reference
    assert record.retry_attrs() == TrialRecord.attrs(retry_of=0, reference=True)
    assert record.requeue_attrs() == TrialRecord.attrs(reference=True)
    with pytest.raises(TypeError, match="no recorded field 'acuracy'"):
        TrialRecord.attrs(acuracy=0.5)


def test_study_record_round_trip_and_the_original_model(tmp_path):
    config = SearchConfig(trials=3).to_dict()
    study = _journal_study(tmp_path)
    versions = {"pdenas": "x", "torch": "y", "optuna": optuna.__version__}
    StudyRecord.write(study, config=config, versions=versions,
                      original={"params": 100, "macs": 1000, "conv_macs": 900, "latency_ms": 2.5})
    before = StudyRecord.from_study(_reload(tmp_path))
    assert (before.config, before.versions, before.format) == (config, versions, FORMAT_VERSION)
    assert (before.original.macs, before.original.params, before.original.latency_ms) == (1000, 100, 2.5)
    assert before.original.trial_number is None and before.original.accuracy is None
    assert before.objectives == ("accuracy", "macs") and before.model == "resnet_tiny"

    # the original's completed trial wins over the stored costs; a failed attempt before it does not count
    for state in (TrialState.FAIL, TrialState.COMPLETE):
        study.enqueue_trial({}, user_attrs=TrialRecord.attrs(reference=True))
        trial = study.ask()
        TrialRecord.write(trial, macs=1001, accuracy=0.8 if state == TrialState.COMPLETE else None)
        study.tell(trial, [0.8, 1001.0] if state == TrialState.COMPLETE else None, state=state)
    after = StudyRecord.from_study(_reload(tmp_path)).original
    assert (after.trial_number, after.accuracy, after.macs, after.params) == (1, 0.8, 1001, 100)


def test_values_of_the_wrong_type_read_as_missing(tmp_path):
    study = _journal_study(tmp_path)
    trial = study.ask()
    for key, value in (("accuracy", "high"), ("macs", 1.5), ("reference", "yes"), ("progress", [1]), ("plan", [1, 2])):
        trial.set_user_attr(key, value)  # a study written by some other tool
    record = TrialRecord.from_trial(trial)
    assert (record.accuracy, record.macs, record.reference, record.progress, record.plan) == (None, None, False, None, None)


# --------------------------------------------------------------------------- the 0.1.0 study folder

# pdenas 0.1.0's user attribute names, literally: the layout a study folder of that release holds
OLD_KEYS = {
    "plan": "plan", "plan_text": "plan_text", "accuracy": "accuracy", "macs": "macs", "conv_macs": "conv_macs",
    "params": "params", "latency_ms": "latency_ms", "train_time": "train_time", "eval_time": "eval_time",
    "wall_time": "wall_time", "epochs": "epochs", "seed": "seed", "reference": "reference", "feasible": "feasible",
    "reused_from": "reused_from", "retry_of": "retry_of", "failure": "failure", "worker": "worker", "progress": "progress",
}


def test_a_study_folder_written_by_pdenas_0_1_0_opens(tmp_path):
    """``tests/search/data/study-0.1.0``: made by pdenas 0.1.0 (commit 82d0f64) with ``search.yaml``
    beside it: ``pdenas search --config search.yaml --study-dir study``, Ctrl-C during trial 1, then the
    same command again (so it holds a failed trial and its retry, an infeasible candidate, latency)."""
    directory = tmp_path / "study"
    shutil.copytree(OLD_STUDY, directory)
    before = {p.name: p.read_bytes() for p in directory.iterdir()}
    study = open_study(directory)
    plain = study.get_trials(deepcopy=False)  # what Optuna itself reads, key by key
    records = [TrialRecord.from_trial(t) for t in plain]
    for trial, record in zip(plain, records, strict=True):
        for name, key in OLD_KEYS.items():
            if key in trial.user_attrs:
                stored = trial.user_attrs[key]
                assert getattr(record, name) == (tuple(stored) if name == "progress" else stored), (trial.number, name)
        assert record.values == (None if trial.values is None else tuple(trial.values))
        assert record.constraints == trial.constraints
    assert [r.state for r in records] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE,
                                          TrialState.COMPLETE]
    assert records[0].reference and records[2].retry_of == 1 and "interrupted" in records[1].failure
    assert not records[3].feasible and records[3].accuracy is None
    assert all(r.latency_ms is not None and r.plan_text for r in records if r.complete)

    study_record = StudyRecord.from_study(study)
    assert study_record.format == FORMAT_VERSION == study.user_attrs["pdenas.format"]
    assert study_record.config == study.user_attrs["pdenas.config"]
    assert SearchConfig.from_dict(study_record.config).constraints.max_macs == 0.45
    assert study_record.original.trial_number == 0 and study_record.original.accuracy == records[0].accuracy
    assert study_record.original.macs == study.user_attrs["pdenas.original"]["macs"]

    feasible = [r for r in records if r.complete and all(v <= 0 for v in r.constraints.values())]
    front = {r.number for r in feasible
             if not any(o.values[0] >= r.values[0] and o.values[1] <= r.values[1] and o.values != r.values for o in feasible)}
    assert {t.number for t in pareto_trials(study)} == front == {2, 4}
    data = build_report_data(study, study_dir=directory, importances=False)
    assert {t.number for t in data.pareto} == front and data.original.trial_number == 0
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before  # reading wrote nothing


def test_no_other_module_touches_pdenas_user_attributes():
    pattern = re.compile(r"\.user_attrs\b|set_user_attr\(|set_trial_user_attr\(")
    record = ROOT / "pdenas" / "search" / "_record.py"
    offenders = [f"{path.relative_to(ROOT)}:{n}" for path in sorted((ROOT / "pdenas").rglob("*.py")) if path != record
                 for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert offenders == []


def test_stage_records_of_the_wrong_shape_read_as_missing(tmp_path):
    study = _journal_study(tmp_path)
    trial = study.ask()
    good = {"key": "k", "keep": 1, "global_layer": None, "loss": 0.5, "mse": 0.2, "initial_loss": 0.9, "reused": False,
            "train_time": 1.0}
    for value in ({"layer1": {**good, "loss": "low"}}, {"layer1": {**good, "keep": None}}, [good], {"layer1": 3}):
        trial.set_user_attr("stages", value)  # a study written by some other tool
        assert TrialRecord.from_trial(trial).stages is None, value
    trial.set_user_attr("stages", {"layer1": good})
    assert TrialRecord.from_trial(trial).stages["layer1"].describe() == "keep 1"


def test_a_configuration_from_before_the_stagewise_step_reads_as_without_it():
    """pdenas 0.1.0 stored no ``stagewise`` section: its trials were compressed and fine-tuned without it,
    and that is how its configuration reads (export rebuilds them so; extending the study is refused)."""
    import json

    stored = json.loads((OLD_STUDY / "config.json").read_text())["search"]
    assert "stagewise" not in stored
    assert StudyRecord(config=stored).search_config().stagewise.enabled is False
    assert StudyRecord(config=SearchConfig().to_dict()).search_config().stagewise.enabled is True


def test_the_originals_weights_travel_in_a_companion_study_not_with_the_trials(tmp_path):
    study = _journal_study(tmp_path)
    storage = open_storage(StudyLocation(tmp_path))
    assert StudyRecord.read_original_weights(study, storage) is None
    data = bytes(range(256)) * 100
    StudyRecord.write_original_weights(study, storage, data, "f" * 64)
    assert StudyRecord.read_original_weights(_reload(tmp_path), open_storage(StudyLocation(tmp_path))) == (data, "f" * 64)
    assert study.user_attrs == {} and all(not t.user_attrs for t in study.trials)  # the study's own records stay small
