"""``pdenas export``: a real tiny study (the real search: resnet_tiny on 240 digit images, 1 epoch, 3
trials), then its trials rebuilt, trained, saved and checked in every format."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState, create_trial

import pdenas
import pdenas.export._formats as export_formats
from pdenas.cli import main
from pdenas.data import load_dataset
from pdenas.export import CARD_KEY, TOLERANCE, ExportError, ModelCard, evaluate_model, export_trial, parse_formats
from pdenas.report import open_study, select_trial
from pdenas.search import SearchConfig, StudyLocation, create_or_load_study, search
from pdenas.search import StudyRecord, TrialRecord

pytestmark = pytest.mark.filterwarnings("ignore:.*is deprecated:FutureWarning")
record = TrialRecord.from_trial

TINY = """\
model: resnet_tiny
dataset: digits
trials: 3
seed: 0
device: cpu
space:
  stages: all
  global_layer: [true, false]
  keep: {low: 1, high: 2}
  iterations: {low: 1, high: 2}
  dt: {low: 0.1, high: 0.3, log: true}
budget:
  epochs: 1
  batch_size: 32
  lr: 0.05
  subset: 240
  val_fraction: 0.2
stagewise:  # a light stage-wise step: these tests are about the search around it (test_stagewise.py is about the step)
  images: 120
  val_images: 60
  recipe: {epochs: 1, batch_size: 32, precision: fp32}
sampler:
  name: random
"""


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs with one thread (the shared ``one_thread`` fixture)."""


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> Path:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("export")
    config = root / "tiny.yaml"
    config.write_text(TINY)
    directory = root / "study"
    result = search(SearchConfig.from_yaml(config), location=StudyLocation(directory))
    torch.set_num_threads(before)
    assert result.completed == 3 and result.failed == 0
    return directory


def _candidate(directory: Path) -> optuna.trial.FrozenTrial:
    """A completed compressed candidate (not the original model's trial)."""
    study = open_study(directory)
    return next(t for t in study.trials if t.state == TrialState.COMPLETE and not record(t).reference)


def _inputs(model: torch.nn.Module, count: int) -> torch.Tensor:
    """A batch for a model loaded with load_compressed (digits: 1 channel)."""
    return torch.randn(count, *model.pdenas_spec["input_size"])


def test_export_by_number_writes_a_checkpoint_that_load_compressed_rebuilds(study_dir, tmp_path):
    trial = _candidate(study_dir)
    result = export_trial(study_dir, trial=trial.number, out=tmp_path / "by-number", formats="torchscript")

    assert result.trial == trial.number
    assert set(result.paths) == {"pt", "torchscript"}
    pt = result.paths["pt"]
    assert pt == tmp_path / "by-number" / "model.pt" and pt.is_file()
    # the rebuilt candidate is the trial's: same plan, same cost
    assert result.plan == record(trial).plan
    assert result.macs == record(trial).macs and result.params == record(trial).params
    assert result.original["macs"] == StudyRecord.from_study(open_study(study_dir)).original.macs
    assert 0.0 <= result.accuracy <= 1.0 and result.latency_ms > 0 and result.original["latency_ms"] > 0

    loaded = pdenas.load_compressed(pt)
    meta = loaded.pdenas_metadata
    assert meta["trial"] == trial.number and meta["epochs"] == 1 and meta["fine_tune_epochs"] == 0
    assert meta["accuracy"] == result.accuracy and meta["macs"] == result.macs
    assert loaded.pdenas_plan.to_dict() == record(trial).plan
    x = _inputs(loaded, 5)  # the export traced on 2 images and checked on 8
    with torch.no_grad():
        expected = result.model(x)
        assert torch.equal(loaded(x), expected)
    assert result.max_abs_diff["pt"] == 0.0

    # TorchScript: the reported check, and our own on another batch size than the trace's
    assert result.max_abs_diff["torchscript"] <= TOLERANCE
    scripted = torch.jit.load(str(result.paths["torchscript"]))
    with torch.no_grad():
        diff = float((scripted(x) - expected).abs().max())
    assert diff <= TOLERANCE


def test_export_more_epochs_trains_further_and_records_it(study_dir, tmp_path):
    trial = _candidate(study_dir)
    result = export_trial(study_dir, trial=str(trial.number), epochs=1, out=tmp_path / "tuned.pt")
    assert result.paths == {"pt": tmp_path / "tuned.pt"}
    assert result.epochs == 2 and result.fine_tune_epochs == 1
    meta = pdenas.load_compressed(tmp_path / "tuned.pt").pdenas_metadata
    assert meta["epochs"] == 2 and meta["budget_epochs"] == 1 and meta["fine_tune_epochs"] == 1
    assert meta["retrained_accuracy"] == result.retrained_accuracy


def test_export_further_epochs_on_the_whole_training_split(study_dir, tmp_path):
    """--subset all: the further epochs train on every image of the study's training split, not the search's
    240, with the search's validation split and normalisation (the card's)."""
    trial = _candidate(study_dir)
    config = StudyRecord.from_study(open_study(study_dir)).search_config()
    full = load_dataset("digits", seed=config.seed, val_fraction=config.budget.val_fraction)
    searched = load_dataset("digits", seed=config.seed, val_fraction=config.budget.val_fraction, subset=240)
    assert len(full.train_y) > 240
    result = export_trial(study_dir, trial=trial.number, epochs=1, subset="all", out=tmp_path / "all.pt")
    meta = pdenas.load_compressed(tmp_path / "all.pt").pdenas_metadata
    assert result.fine_tune_images == meta["fine_tune_images"] == len(full.train_y)
    assert result.card.preprocessing.mean == pytest.approx(searched.mean)
    assert result.card.preprocessing.mean != pytest.approx(full.mean)
    tuned = export_trial(study_dir, trial=trial.number, epochs=1, subset=100, out=tmp_path / "hundred.pt")
    assert tuned.fine_tune_images == 100
    assert export_trial(study_dir, trial=trial.number, epochs=1, out=tmp_path / "default.pt").fine_tune_images == 240


def test_cli_export_subset_needs_epochs_and_a_count(study_dir, capsys):
    assert main(["export", str(study_dir), "--subset", "all"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--subset sets the images of the further training: give --epochs N" in err
    with pytest.raises(SystemExit):
        main(["export", str(study_dir), "--epochs", "1", "--subset", "most"])
    assert "argument --subset: must be a whole number >= 1 or 'all', got 'most'" in capsys.readouterr().err


def test_cli_export_knee_to_onnx(study_dir, capsys):
    knee = select_trial(open_study(study_dir), "pareto:knee").number
    assert main(["export", str(study_dir), "--trial", "pareto:knee", "--format", "onnx", "--runtime", "onnxruntime"]) == 0
    out = capsys.readouterr().out
    assert f"trial {knee}: original vs exported" in out
    for row in ("accuracy", "MACs", "params", "latency"):
        assert row in out
    assert "check onnx" in out and "ok" in out
    # latency in the runtime asked for, the original's too (the study measured none: its section's default is torch)
    assert "latency: onnxruntime, batch 1, 1 thread, median per call on the CPU, both measured now" in " ".join(out.split())

    folder = study_dir / "export" / f"trial-{knee}"
    model = pdenas.load_compressed(folder / "model.pt")
    assert model.pdenas_metadata["trial"] == knee
    card = ModelCard.from_dict(model.pdenas_metadata["model_card"])
    assert card.latency.runtime == "onnxruntime" and card.latency.median_ms == model.pdenas_metadata["latency_ms"]
    x = _inputs(model, 3)
    with torch.no_grad():
        expected = model(x).numpy()
    try:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
        got = session.run(None, {"input": x.numpy()})[0]
    except ImportError:
        from onnx.reference import ReferenceEvaluator

        got = ReferenceEvaluator(str(folder / "model.onnx")).run(None, {"input": x.numpy()})[0]
    assert abs(got - expected).max() <= TOLERANCE


def test_onnx_checked_with_the_reference_evaluator_without_onnxruntime(study_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    result = export_trial(study_dir, trial=_candidate(study_dir).number, out=tmp_path, formats=["onnx"])
    assert result.onnx_runtime == "onnx.reference.ReferenceEvaluator" and result.check_images["onnx"] == 2
    assert result.onnx_exporter == "torchscript"
    assert result.max_abs_diff["onnx"] <= TOLERANCE and (tmp_path / "model.onnx").is_file()


@pytest.mark.slow
def test_onnx_falls_back_to_the_dynamo_exporter(study_dir, tmp_path, monkeypatch):
    real = export_formats.onnx_export_once

    def legacy_fails(model, example, path, *, dynamo):
        if not dynamo:
            raise RuntimeError("unsupported operator")
        return real(model, example, path, dynamo=dynamo)

    monkeypatch.setattr(export_formats, "onnx_export_once", legacy_fails)
    result = export_trial(study_dir, trial=_candidate(study_dir).number, out=tmp_path, formats=["onnx"])
    assert result.onnx_exporter == "dynamo" and result.max_abs_diff["onnx"] <= TOLERANCE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.pt"]  # weights inside the .onnx


def test_the_original_is_its_completed_trial_not_a_failed_attempt(tmp_path):
    """The original model's first attempt (trial 0) failed and was retried (trial 1): the export compares
    with trial 1's figures, not with the failed attempt's."""
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    settings = SearchConfig.from_yaml(config).with_overrides(trials=2)
    location = StudyLocation(tmp_path / "study")
    study, _ = create_or_load_study(location, settings, None)  # queues the original's trial
    attempt = study.ask()
    TrialRecord.write(attempt, failure="the worker running it died (stale trial); re-queued")
    study.tell(attempt, state=TrialState.FAIL)
    study.enqueue_trial({}, user_attrs=TrialRecord.from_trial(study.trials[0]).retry_attrs())
    assert search(settings, location=location).completed == 2

    trials = [record(t) for t in open_study(location.directory).trials]
    assert trials[0].reference and trials[0].state == TrialState.FAIL
    assert trials[1].reference and trials[1].retry_of == 0 and trials[1].complete
    result = export_trial(location.directory, trial=2, out=tmp_path / "out")
    assert result.original["trial"] == 1
    assert result.original["accuracy"] == trials[1].accuracy is not None


def _plan_params(keep: int, iterations: int) -> dict:
    """Search parameters of a plan for resnet_tiny's four stages: keep blocks, then a Global layer."""
    params = {}
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        params.update({f"{stage}.keep": keep, f"{stage}.global": True, f"{stage}.iterations": iterations, f"{stage}.dt": 0.2})
    return params


def test_the_rebuilt_candidate_starts_from_the_searchs_weights(tmp_path, monkeypatch):
    """Trial 2 (Global layers: new, random weights) follows an untrained trial (over the MAC limit), so
    the search built it with the random generator wherever that trial left it; the export rebuilds it
    alone. Both must start from the same weights (its stages loaded from the study's distilled variants,
    which the export reuses), so that the export reproduces the trial's training."""
    import pdenas.search._candidate

    phase = ["search"]
    started: list[tuple[str, dict]] = []  # (who trained, the weights it started from)
    real = pdenas.search._candidate.train_model

    def spy(model, *args, **kwargs):
        started.append((phase[0], {k: v.clone() for k, v in model.state_dict().items()}))
        return real(model, *args, **kwargs)

    monkeypatch.setattr(pdenas.search._candidate, "train_model", spy)  # the trial's training, in the search and the export
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY.replace("global_layer: [true, false]", "global_layer: [true]") + "constraints:\n  max_macs: 0.45\n")
    settings = SearchConfig.from_yaml(config)
    location = StudyLocation(tmp_path / "study")
    study, _ = create_or_load_study(location, settings, None)  # the original's trial, then:
    study.enqueue_trial(_plan_params(keep=2, iterations=2))  # over the MAC limit: not trained
    study.enqueue_trial(_plan_params(keep=1, iterations=1))  # trained
    assert search(settings, location=location).completed == 3
    trials = [record(t) for t in open_study(location.directory).trials]
    assert [t.feasible for t in trials[1:]] == [False, True]
    searched = [weights for who, weights in started if who == "search"]
    assert len(searched) == 2  # the original and trial 2

    phase[0] = "export"
    result = export_trial(location.directory, trial=2, out=tmp_path / "out")
    who, exported = started[-1]
    assert who == "export" and exported.keys() == searched[1].keys() and set(exported) - set(searched[0])  # new layers
    for name, tensor in searched[1].items():
        assert torch.equal(exported[name], tensor), name
    assert result.retrained_accuracy == result.search_accuracy  # one thread: the same training, bit for bit


# ---------------------------------------------------------------------------------------------- errors


def test_unknown_trial_number(study_dir, capsys):
    with pytest.raises(ExportError, match="trial 99 does not exist"):
        export_trial(study_dir, trial=99)
    assert main(["export", str(study_dir), "--trial", "99"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pdenas: error: trial 99 does not exist") and "Traceback" not in err


def test_failed_and_infeasible_trials_are_refused(study_dir, tmp_path):
    copy = tmp_path / "study"
    shutil.copytree(study_dir, copy, ignore=shutil.ignore_patterns("export", ".lock"))
    study = open_study(copy)
    failed = study.ask()
    TrialRecord.write(failed, failure="training loss became nan in epoch 1")
    study.tell(failed, state=TrialState.FAIL)
    plan = record(_candidate(copy)).plan
    study.add_trial(create_trial(values=[0.0, 1e6], user_attrs=TrialRecord.attrs(plan=plan, feasible=False, macs=10**6)))
    infeasible = study.trials[-1].number

    with pytest.raises(ExportError, match=rf"trial {failed.number} failed \(training loss became nan in epoch 1\)"):
        export_trial(copy, trial=failed.number)
    with pytest.raises(ExportError, match=f"trial {infeasible} is infeasible"):
        export_trial(copy, trial=infeasible)


def test_not_a_study_directory(tmp_path, capsys):
    with pytest.raises(ExportError, match="is not a pdenas study directory"):
        export_trial(tmp_path)
    assert main(["export", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "is not a pdenas study directory" in err and len(err.splitlines()) <= 2


def test_onnx_without_the_onnx_extra_is_refused_before_any_work(study_dir, tmp_path, monkeypatch, capsys):
    """Training takes minutes: a missing package is said at once, with the install command in full."""
    for name in ("onnx", "onnxruntime", "onnxscript"):
        monkeypatch.setitem(sys.modules, name, None)  # import NAME -> ImportError, as without the extra
    out = tmp_path / "out"
    assert main(["export", str(study_dir), "--trial", str(_candidate(study_dir).number), "--format", "onnx", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "pip install 'pdenas[onnx]'" in captured.err  # brackets and all
    assert "training" not in captured.out and not out.exists()


def test_a_latency_runtime_that_is_not_installed_is_refused_before_any_work(study_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    out = tmp_path / "out"
    assert main(["export", str(study_dir), "--trial", str(_candidate(study_dir).number), "--runtime", "onnxruntime", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.err == "pdenas: error: --runtime onnxruntime: runtime 'onnxruntime' needs onnxruntime: pip install 'pdenas[onnx]'\n"
    assert "training" not in captured.out and not out.exists()


@pytest.mark.slow
def test_export_an_aoti_package_that_carries_its_card(study_dir, tmp_path):
    """AOTInductor compiles C++ (about a minute): the package is parity-checked like the other files, says how
    to feed it, and evaluates to the checkpoint's accuracy."""
    result = export_trial(study_dir, trial=_candidate(study_dir).number, out=tmp_path, formats="aoti")
    assert result.paths["aoti"] == tmp_path / "model.pt2" and result.max_abs_diff["aoti"] <= TOLERANCE
    compiled = torch._inductor.aoti_load_package(str(tmp_path / "model.pt2"))
    assert ModelCard.from_json(compiled.get_metadata()[CARD_KEY]) == result.card
    aoti = evaluate_model(tmp_path / "model.pt2", "digits", latency=False)
    checkpoint = evaluate_model(tmp_path / "model.pt", "digits", latency=False)
    assert aoti.format == "aoti" and aoti.images == checkpoint.images == 1797 and aoti.correct == checkpoint.correct


def test_formats():
    assert parse_formats(None) == ("pt",)
    assert parse_formats("onnx") == ("pt", "onnx")
    assert parse_formats(["onnx,torchscript", "pt"]) == ("pt", "torchscript", "onnx")
    assert parse_formats("aoti,onnx") == ("pt", "onnx", "aoti")
    with pytest.raises(ExportError, match="unknown export format 'tflite'"):
        parse_formats(["pt,tflite"])


def test_cli_unknown_format_and_bad_epochs(study_dir, capsys):
    assert main(["export", str(study_dir), "--format", "pt,tflite"]) == 2
    assert "unknown export format 'tflite'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export", str(study_dir), "--epochs", "-1"])
    assert "argument --epochs: must be a whole number >= 0" in capsys.readouterr().err
