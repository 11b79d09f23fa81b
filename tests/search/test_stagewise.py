"""The stage-wise path end to end, as a user runs it (issue 13, items 2-5): ``pdenas search`` on digits
trains the original as trial 0 and keeps its weights; every later trial assembles its candidate from
stage variants distilled from that original (each trained once, then reused), records the per-stage
results and its accuracy before fine-tuning, and is fine-tuned with the original as teacher;
``pdenas export`` rebuilds a trial from the same variants and reproduces its accuracy."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState

from pdenas import create_model, load_weights
from pdenas.data import load_dataset
from pdenas.surgery import CompressionPlan, StagePlan
from pdenas.train import TrainRecipe, evaluate, train_model
from pdenas.export._trial import _legend
from pdenas.distill import model_fingerprint
from pdenas.export import export_trial
from pdenas.report import build_report_data
from pdenas.search import (
    ORIGINAL_FILE, SearchConfig, StudyLocation, TrialRecord, build_context, create_or_load_study, open_storage, train_candidate,
)

from .conftest import pdenas_cmd, run_pdenas

record = TrialRecord.from_trial
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # the export below reruns a trial on one thread: the same arithmetic

STAGEWISE = """\
model: resnet_tiny
dataset: digits
trials: {trials}
seed: 0
device: cpu
space:
  stages: {stages}
  global_layer: [true, false]
  keep: {{low: 1, high: 1}}
  iterations: {{low: 1, high: 1}}
  dt: {{low: 0.1, high: 0.2, step: 0.1}}
budget:
  epochs: 1
  batch_size: 32
  lr: 0.05
  subset: 240
  val_fraction: 0.2
  distillation: 0.5
stagewise:
  images: 240
  val_images: 120
  recipe: {{epochs: {stage_epochs}, batch_size: 32, precision: fp32}}
sampler:
  name: random
"""


def stagewise_yaml(directory: Path, *, trials: int = 4, stages: str = "all", stage_epochs: int = 2) -> Path:
    path = directory / "stagewise.yaml"
    path.write_text(STAGEWISE.format(trials=trials, stages=stages, stage_epochs=stage_epochs))
    return path


def load(directory: Path) -> optuna.Study:
    return optuna.load_study(study_name="pdenas", storage=open_storage(StudyLocation(directory)))


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stagewise")
    directory = root / "study"
    start = time.monotonic()
    proc = run_pdenas("search", "--config", str(stagewise_yaml(root)), "--study-dir", str(directory), env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr
    print(f"TIME stagewise search of 4 trials: {time.monotonic() - start:.1f} s")
    return directory


def test_trial_0_trains_the_original_and_keeps_its_weights(study_dir):
    study = load(study_dir)
    original = record(study.trials[0])
    assert original.reference and original.complete and original.epochs == 1 and original.stages is None
    model = create_model("resnet_tiny", in_channels=1)
    load_weights(model, study_dir / ORIGINAL_FILE)  # a save_compressed checkpoint with the identity plan
    assert model_fingerprint(model) == original.weights_fingerprint


def test_every_candidate_is_assembled_from_variants_each_trained_once(study_dir):
    trials = [record(t) for t in load(study_dir).trials if not record(t).reference]
    assert len(trials) == 3 and all(t.complete and t.reused_from is None for t in trials)
    trained = Counter()
    used = Counter()
    for t in trials:
        assert list(t.stages) == ["layer1", "layer2", "layer3", "layer4"]  # keep 1 of 5: every stage changes
        assert 0 <= t.initial_accuracy <= 1 and 0 <= t.accuracy <= 1 and t.stagewise_time > 0
        for name, stage in t.stages.items():
            assert (study_dir / "stages" / f"{stage.key}.pt").is_file()
            assert stage.key.startswith(f"{name}-keep1-{'global' if stage.global_layer else 'blocks'}-")
            assert 0 < stage.loss < stage.initial_loss + 1 and stage.macs > 0
            trained[stage.key] += not stage.reused
            used[stage.key] += 1
    assert set(trained.values()) == {1}, "a stage variant was trained twice"
    assert max(used.values()) >= 2, "no variant was reused (this seed's plans should share one)"
    assert len(list((study_dir / "stages").glob("*.pt"))) == len(used)


def test_the_report_shows_the_stage_losses_and_the_per_stage_view(study_dir):
    data = build_report_data(load(study_dir), importances=False)
    trials = {t.number: t for t in data.trials}
    for variant in (v for v in data.stages.variants if not v.original):
        holders = [trials[n] for n in variant.trials]
        assert holders and all(t.stages[variant.stage].key == variant.key for t in holders)
        assert variant.loss == holders[0].stages[variant.stage].loss
        assert variant.best_accuracy == max(t.accuracy for t in holders)
    assert {c.stage for c in data.stages.choices} == {"layer1", "layer2", "layer3", "layer4"}
    assert all(c.verdict for c in data.stages.choices)
    assert run_pdenas("report", str(study_dir)).returncode == 0
    stages_csv = (study_dir / "stages.csv").read_text().splitlines()
    assert stages_csv[0].startswith("stage,keep,blocks_loss") and len(stages_csv) == 1 + len(data.stages.choices)
    page = (study_dir / "report.html").read_text()
    assert "Where a Global layer pays, stage by stage" in page and 'id="stage-table"' in page
    status = run_pdenas("status", str(study_dir)).stdout
    used = sum(len(t.stages) for t in data.trials if t.stages)
    assert f"stage-wise step: {len(data.stages.variants) - sum(v.original for v in data.stages.variants)} stage variants in 3 trials" in status
    assert f"{sum(not s.reused for t in data.trials for s in (t.stages or {}).values())} trained and" in status and used == 12
    assert all(f"{c.stage}, {c.keep} kept: {c.verdict[:40]}" in status for c in data.stages.choices)
    assert "· loss " in run_pdenas("show", str(study_dir)).stdout  # each distilled stage's loss beside its plan line


def test_export_reuses_the_variants_and_reproduces_the_trials_accuracy(study_dir, tmp_path, one_thread):
    before = {p.name: p.stat().st_mtime_ns for p in (study_dir / "stages").glob("*.pt")}
    trial = max((record(t) for t in load(study_dir).trials if not record(t).reference), key=lambda t: t.accuracy)
    result = export_trial(study_dir, trial=trial.number, out=tmp_path / "out")
    assert result.retrained_accuracy == trial.accuracy  # one thread in both: the same training, bit for bit
    assert {p.name: p.stat().st_mtime_ns for p in (study_dir / "stages").glob("*.pt")} == before  # nothing retrained


def test_given_weights_are_scored_as_they_are(study_dir, tmp_path):
    """``--weights`` takes a study's ``original.pt``: trial 0 scores it untrained, and it matches the score
    the first study gave those weights; the next trial compresses them."""
    first = record(load(study_dir).trials[0])
    directory = tmp_path / "given"
    proc = run_pdenas("search", "--config", str(stagewise_yaml(tmp_path, trials=2)), "--study-dir", str(directory),
                      "--weights", str(study_dir / ORIGINAL_FILE), env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr
    original, candidate = (record(t) for t in load(directory).trials)
    assert original.reference and original.epochs == 0 and original.train_time == 0.0
    assert original.accuracy == first.accuracy and original.weights_fingerprint is None
    assert not (directory / ORIGINAL_FILE).exists()
    assert candidate.complete and candidate.stages and candidate.initial_accuracy is not None
    exported = export_trial(directory, trial=candidate.number, out=tmp_path / "exported")
    assert "trial 0, the given weights as they are)" in _legend(exported)[0]  # not "trained N epochs"


def test_a_trial_keeps_its_assembled_weights_when_fine_tuning_makes_it_worse(study_dir, tmp_path, one_thread):
    """Fine-tuning at a learning rate of 3 wrecks an assembled candidate of a trained original: the trial then
    scores, and keeps, what the assembly scored, and says so; the module's trials (lr 0.05) never score below it."""
    torch.manual_seed(0)
    original = create_model("resnet_tiny", in_channels=1)
    data = load_dataset("digits", seed=0, val_fraction=0.2, subset=400)
    train_model(original, data, TrainRecipe(epochs=6, batch_size=32, lr=0.05), seed=0, device="cpu")
    torch.save(original.state_dict(), tmp_path / "original.pt")
    raw = yaml.safe_load(stagewise_yaml(tmp_path, trials=2, stages="[layer4]").read_text())
    raw.update(weights=str(tmp_path / "original.pt"))
    raw["budget"].update(lr=3.0, subset=400)
    ctx = build_context(SearchConfig.from_dict(raw), location=StudyLocation(tmp_path / "s"))
    plan = CompressionPlan({"layer4": StagePlan(1)})
    trained = train_candidate(ctx, plan)
    assert trained.initial_accuracy > 0.2  # well above chance (0.1): worth keeping
    assert trained.fine_tuning_discarded and trained.result.accuracy == trained.initial_accuracy
    assert evaluate(trained.model, ctx.data, device="cpu") == trained.initial_accuracy  # the assembled weights, back
    kept = [record(t) for t in load(study_dir).trials[1:]]
    assert all(t.accuracy >= t.initial_accuracy for t in kept if t.reused_from is None)


def test_stagewise_disabled_fine_tunes_the_compressed_original(tmp_path):
    """The ablation: the plan applied to the trained original as it is, then fine-tuned; no stage-wise step."""
    path = stagewise_yaml(tmp_path, trials=2, stages="[layer4]")
    path.write_text(path.read_text().replace("stagewise:\n", "stagewise:\n  enabled: false\n"))
    assert run_pdenas("search", "--config", str(path), "--study-dir", str(tmp_path / "s"), env=ONE_THREAD).returncode == 0
    _, candidate = (record(t) for t in load(tmp_path / "s").trials)
    assert candidate.complete and candidate.stages is None and candidate.stagewise_time is None
    assert candidate.initial_accuracy is not None  # the compressed original before fine-tuning
    assert not (tmp_path / "s" / "stages").exists() and not (tmp_path / "s" / "features").exists()


def _plan(global_layers: dict[str, bool]) -> dict:
    params = {}
    for stage, with_global in global_layers.items():
        params[f"{stage}.global"] = with_global
        if with_global:
            params[f"{stage}.dt"] = 0.1
    return params


def test_two_workers_share_a_variant_it_is_trained_once(tmp_path):
    """Trials 1 and 2 both keep layer1's first block without a Global layer; two workers run them at once
    (both wait for the original first): one trains that variant while the other waits on its lock, then
    loads it."""
    path = stagewise_yaml(tmp_path, trials=5, stages="[layer1, layer2]")
    directory = tmp_path / "s"
    config = SearchConfig.from_yaml(path)
    study, _ = create_or_load_study(StudyLocation(directory), config, None)  # queues the original's trial
    for plan in ({"layer1": False, "layer2": True}, {"layer1": False, "layer2": False},
                 {"layer1": True, "layer2": False}, {"layer1": True, "layer2": True}):
        study.enqueue_trial(_plan(plan))
    proc = run_pdenas("search", "--config", str(path), "--study-dir", str(directory), "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    trials = [record(t) for t in load(directory).trials]
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 5
    assert len({t.worker for t in trials}) == 2
    trained, used = Counter(), Counter()
    for t in trials[1:]:
        for stage in t.stages.values():
            trained[stage.key] += not stage.reused
            used[stage.key] += 1
    shared = trials[1].stages["layer1"].key
    assert shared == trials[2].stages["layer1"].key and used[shared] == 2
    assert trained == Counter({key: 1 for key in used}), "a variant was trained twice"


def test_a_trial_killed_while_distilling_leaves_no_variant_and_the_study_resumes(tmp_path):
    path = stagewise_yaml(tmp_path, trials=2, stages="[layer1]", stage_epochs=60)
    directory = tmp_path / "s"
    config = SearchConfig.from_yaml(path)
    study, _ = create_or_load_study(StudyLocation(directory), config, None)
    study.enqueue_trial(_plan({"layer1": True}))
    args = ["search", "--config", str(path), "--study-dir", str(directory)]
    proc = subprocess.Popen(pdenas_cmd(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONWARNINGS": "ignore", **ONE_THREAD})
    try:
        deadline = time.monotonic() + 240
        while not list((directory / "stages").glob("*.lock")):  # the variant's lock: its training has begun
            assert proc.poll() is None and time.monotonic() < deadline, "the search never reached the stage-wise step"
            time.sleep(0.1)
        time.sleep(1.0)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not list((directory / "stages").glob("*.pt"))  # no entry, not even a partial one
    resumed = run_pdenas(*args, env=ONE_THREAD, timeout=900)
    assert resumed.returncode == 0, resumed.stderr
    trials = [record(t) for t in load(directory).trials]
    killed = trials[1]
    assert killed.state == TrialState.FAIL and "died" in killed.failure
    retry = next(t for t in trials if t.retry_of == 1)
    assert retry.complete and not retry.stages["layer1"].reused
    assert [p.name for p in (directory / "stages").glob("*.pt")] == [f"{retry.stages['layer1'].key}.pt"]
    assert not list((directory / "stages").glob(".*"))  # no temporary file left behind
