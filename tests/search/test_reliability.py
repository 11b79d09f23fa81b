"""Reliability of the single-machine default (a study directory with Optuna's journal file):
kill -9 at random moments, then resume; and bad inputs, each refused or reported in one line.

The kill -9 suite forks ``pdenas search`` (``pdenas.cli.main``) from this process, whose imports and
data are already loaded, so each of the five runs starts at once. The forked search signals the
phase it is in through a pipe (training, evaluation, writing a result to the journal); the test kills
it at a random moment inside the phase chosen by a seeded RNG. To make the evaluation and writing
phases wide enough to hit, the forked process pauses at their start, and writes a trial's result
record in two halves with a pause between them (a slow disk), so that a kill then leaves a
half-written record and the journal's lock file behind, as a real crash in the middle of a write does.
Each test prints its counts (requested, finished, retried, lost): ``pytest -rP`` shows them.
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import sys
import time
import warnings
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from pdenas import cli
from pdenas.search import SearchConfig, StudyError, StudyLocation, open_storage, run_worker
from pdenas.search import StudyRecord, TrialRecord
from pdenas.search._context import build_context
from pdenas.search._study import repair_journal

record = TrialRecord.from_trial
PHASES = {"training": b"t", "evaluation": b"e", "writing": b"w"}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def load(directory: Path) -> optuna.Study:
    return optuna.load_study(study_name="pdenas", storage=open_storage(StudyLocation(directory)))


def complete(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


# ------------------------------------------------------------------------------- kill -9 suite


def _instrumented_search(args: list[str], signal_fd: int, log_path: Path) -> None:
    """In the forked child: report phases on ``signal_fd``, widen them a little, run pdenas search."""
    import pdenas.search._candidate as trial_module  # where a trial trains its candidate
    import pdenas.train as train_module
    from optuna.storages.journal import JournalFileBackend
    from optuna.storages.journal._file import get_lock_file

    torch.set_num_threads(1)  # as DataLoader workers do: no OpenMP pool after fork
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    cli.console.file = sys.stdout
    cli.err_console.file = sys.stderr

    train_model, evaluate = trial_module.train_model, train_module.evaluate

    def signalled_train(*a, **k):
        os.write(signal_fd, PHASES["training"])
        return train_model(*a, **k)

    def signalled_evaluate(*a, **k):
        os.write(signal_fd, PHASES["evaluation"])
        time.sleep(1.0)
        return evaluate(*a, **k)

    def slow_append(self, logs):
        data = ("\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n").encode()
        result = any(log.get("op_code") == 6 and log.get("values") is not None for log in logs)
        with get_lock_file(self._lock):
            with open(self._file_path, "ab") as f:
                if result:  # a trial's result (state COMPLETE with its values): in two halves
                    f.write(data[: len(data) // 2])
                    f.flush()
                    os.fsync(f.fileno())
                    os.write(signal_fd, PHASES["writing"])
                    time.sleep(2.0)
                    data = data[len(data) // 2:]
                f.write(data)
                f.flush()
                os.fsync(f.fileno())

    trial_module.train_model = signalled_train
    train_module.evaluate = signalled_evaluate
    JournalFileBackend.append_logs = slow_append
    os._exit(cli.main(args))


def _kill_in_phase(args: list[str], phase: str, occurrence: int, delay: float, log_path: Path) -> tuple[str, int]:
    """Fork the search, kill -9 it ``delay`` s into the ``occurrence``-th time it enters ``phase``.

    Returns the phase it was last seen in and its exit status (``-9`` when killed)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read_fd)
        try:
            _instrumented_search(args, write_fd, log_path)
        finally:
            os._exit(70)
    os.close(write_fd)
    seen = 0
    last = ""
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([read_fd], [], [], 0.5)
            if not ready:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    return last, os.waitstatus_to_exitcode(status)
                continue
            data = os.read(read_fd, 64)
            if not data:  # the search ended without reaching the phase
                _, status = os.waitpid(pid, 0)
                return last, os.waitstatus_to_exitcode(status)
            for byte in data:
                last = next(name for name, code in PHASES.items() if code[0] == byte)
                seen += last == phase
            if seen >= occurrence:
                time.sleep(delay)
                os.kill(pid, signal.SIGKILL)
                _, status = os.waitpid(pid, 0)
                while select.select([read_fd], [], [], 0)[0]:  # the phase it was really in when killed
                    data = os.read(read_fd, 64)
                    if not data:
                        break
                    last = next(name for name, code in PHASES.items() if code[0] == data[-1])
                return last, os.waitstatus_to_exitcode(status)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise AssertionError(f"the search did not reach phase {phase!r} in time")
    finally:
        os.close(read_fd)


def test_kill_9_five_times_at_random_moments_then_resume(tiny_yaml, tmp_path, capsys):
    requested = 12
    config = tiny_yaml(trials=requested, subset=120)
    directory = tmp_path / "study"
    args = ["search", "--config", str(config), "--study-dir", str(directory)]
    build_context(SearchConfig.from_yaml(config))  # load the data and modules once, before forking
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)

    rng = random.Random(20240607)
    phases = ["training", "evaluation", "writing", rng.choice(list(PHASES)), rng.choice(list(PHASES))]
    rng.shuffle(phases)
    kills: list[dict] = []
    completed_before: dict[int, tuple[list[float], dict]] = {}
    for round_, phase in enumerate(phases):
        occurrence, delay = rng.randint(1, 2), rng.uniform(0.0, 0.3)
        last, code = _kill_in_phase(args, phase, occurrence, delay, tmp_path / f"run{round_}.log")
        assert code == -signal.SIGKILL, (round_, phase, code, (tmp_path / f"run{round_}.log").read_text()[-2000:])
        study = load(directory)
        running = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
        kills.append({"phase": last, "occurrence": occurrence, "delay": round(delay, 3), "running": running})
        for t in complete(study):
            completed_before.setdefault(t.number, (t.values, record(t).plan))
    assert {k["phase"] for k in kills} == set(PHASES)

    started = time.monotonic()
    assert cli.main(args) == 0  # the final resume, not instrumented
    resume_seconds = time.monotonic() - started
    notes = "".join((tmp_path / f"run{i}.log").read_text() for i in range(len(phases))) + capsys.readouterr().out
    if any(k["phase"] == "writing" for k in kills):  # a later run found the half-written record
        assert "dropped the half-written last record of study.log" in notes
        assert "removed study.log.lock" in notes

    study = load(directory)
    done = complete(study)
    assert len(done) == requested
    assert not study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.WAITING))
    for number, (values, plan) in completed_before.items():  # nothing completed is lost or changed
        assert study.trials[number].state == TrialState.COMPLETE
        assert study.trials[number].values == values and record(study.trials[number]).plan == plan
    for t in done:  # every completed trial is whole
        for name in ("plan", "plan_text", "accuracy", "macs", "params", "epochs", "worker"):
            assert getattr(record(t), name), (t.number, name)
        assert t.values == [record(t).accuracy, record(t).macs]
    killed = {n for k in kills for n in k["running"]}
    for number in killed:  # each trial a kill interrupted failed with the reason, and was run again
        trial = study.trials[number]
        assert trial.state == TrialState.FAIL and "died" in record(trial).failure
        assert any(record(t).retry_of == number for t in study.trials)
    assert sum(record(t).reference for t in done) == 1
    with open(directory / "study.log", "rb") as f:  # the journal is whole: every line a record
        assert all(line.endswith(b"\n") and json.loads(line) for line in f)

    from pdenas.report import write_report

    write_report(directory)
    import csv

    rows = list(csv.DictReader(open(directory / "trials.csv", newline="")))
    assert {int(r["number"]) for r in rows if r["state"] == "COMPLETE"} == {t.number for t in done}
    pareto = {int(r["number"]) for r in csv.DictReader(open(directory / "pareto.csv", newline=""))}
    assert pareto == {t.number for t in study.best_trials}
    retried = sum(record(t).retry_of is not None for t in study.trials)
    print(f"kills: {kills}")
    print(f"COUNTS kill_9_x5: requested={requested} finished={len(done)} retried={retried} "
          f"lost={sum(study.trials[n].state != TrialState.COMPLETE for n in completed_before)} "
          f"interrupted={len(killed)} final_resume_s={resume_seconds:.1f}")


# ------------------------------------------------------------------------------------ bad inputs


def _fake_study(directory: Path, trials: int = 3) -> None:
    """A small study directory as the search leaves it (config.json + journal), without training."""
    from tests.report.report_studies import Costs, StudyBuilder

    builder = StudyBuilder(directory, original=Costs(macs=1000, params=100, conv_macs=900))
    builder.add_reference(accuracy=0.9, costs=Costs(macs=1000, params=100, conv_macs=900))
    for i in range(trials - 1):
        builder.add_candidate(keeps={"layer1": 1 + i}, accuracy=0.8 - 0.1 * i, costs=Costs(macs=500 + i, params=50, conv_macs=400))


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


def test_half_written_last_record_is_dropped_and_completed_trials_survive(tmp_path, capsys):
    _fake_study(tmp_path / "s")
    journal = tmp_path / "s" / "study.log"
    whole = journal.read_bytes()
    journal.write_bytes(whole + b'{"op_code":6,"worker_id":"x","trial_id":9,"sta')  # a crash mid-write
    Path(str(journal) + ".lock").touch()  # and the journal lock of the writer that died
    assert cli.main(["status", str(tmp_path / "s")]) == 0  # readers skip the torn record
    assert "3 complete" in capsys.readouterr().out
    notes = repair_journal(StudyLocation(tmp_path / "s"))
    assert notes == [
        "removed study.log.lock, a journal lock left by a process that died while writing",
        "dropped the half-written last record of study.log (46 bytes, a crash while writing)",
    ]
    assert journal.read_bytes() == whole
    assert len(complete(load(tmp_path / "s"))) == 3
    assert repair_journal(StudyLocation(tmp_path / "s")) == []


def test_corrupt_journal_is_one_line_naming_the_line(tmp_path, capsys):
    _fake_study(tmp_path / "s")
    journal = tmp_path / "s" / "study.log"
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join(lines[:4]) + b"\x00\x17garbage\xff\n" + b"".join(lines[4:]))
    expected = (f"pdenas: error: the study storage {journal} is unreadable (line 5 is not a journal record): "
                "move it aside to start a new study, or restore it from a backup")
    assert cli.main(["status", str(tmp_path / "s")]) == 2
    assert _error_line(capsys) == expected
    assert cli.main(["report", str(tmp_path / "s")]) == 2
    assert _error_line(capsys) == expected
    with pytest.raises(StudyError, match="line 5 is not a journal record"):
        open_storage(StudyLocation(tmp_path / "s"))


def test_truncated_journal_keeps_every_whole_record(tmp_path):
    """A journal cut short inside its last record (a full disk, a copy cut off): what is whole is kept; the
    trial whose result was cut off is RUNNING again, so the next search re-runs it."""
    _fake_study(tmp_path / "s", trials=2)
    journal = tmp_path / "s" / "study.log"
    journal.write_bytes(journal.read_bytes()[:-7])  # the last record (the second trial's result) cut short
    before = {t.number for t in complete(load(tmp_path / "s"))}
    assert before == {0}
    repaired = repair_journal(StudyLocation(tmp_path / "s"))
    assert repaired and "dropped the half-written last record" in repaired[0]
    study = load(tmp_path / "s")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.RUNNING]


def test_study_dir_of_an_incompatible_version_is_refused_in_one_line(tiny_yaml, tmp_path, capsys):
    directory = tmp_path / "s"
    _fake_study(directory)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "format": 99}))
    journal = (directory / "study.log").read_bytes()
    expected = (f"pdenas: error: {directory} was written by an incompatible pdenas version (study format 99, this "
                "pdenas reads 1): use the pdenas version that created it, or start a new study directory")
    for command in (["search", "--config", str(tiny_yaml()), "--study-dir", str(directory)], ["report", str(directory)],
                    ["status", str(directory)]):
        assert cli.main(command) == 2
        assert _error_line(capsys) == expected
    assert (directory / "study.log").read_bytes() == journal  # untouched

    # config.json fine, but the study itself says another format
    (directory / "config.json").write_text(json.dumps(config))
    study = load(directory)
    StudyRecord.write_format(study, 99)
    assert cli.main(["search", "--config", str(tiny_yaml()), "--study-dir", str(directory)]) == 2
    assert "was created by an incompatible pdenas (study format 99, expected 1): use another --study-dir" in _error_line(capsys)


def test_weights_with_missing_keys_are_one_line(tiny_yaml, tmp_path, capsys):
    from pdenas.surgery import build_model

    state = build_model("resnet_tiny").state_dict()
    del state["fc.weight"]
    torch.save(state, tmp_path / "w.pt")
    args = ["search", "--config", str(tiny_yaml()), "--study-dir", str(tmp_path / "s"), "--weights", str(tmp_path / "w.pt")]
    assert cli.main(args) == 2
    line = _error_line(capsys)
    assert line.startswith("pdenas: error: ") and "fc.weight" in line and "missing" in line
    assert not (tmp_path / "s" / "study.log").exists()


def test_dataset_folder_without_images_is_one_line(tiny_yaml, tmp_path, capsys):
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    (tmp_path / "empty" / "cat" / "notes.txt").write_text("no images here")
    args = ["search", "--config", str(tiny_yaml()), "--study-dir", str(tmp_path / "s"), "--dataset", str(tmp_path / "empty")]
    assert cli.main(args) == 2
    assert _error_line(capsys).startswith(f"pdenas: error: no images found in {tmp_path / 'empty'}")


def test_undecodable_image_is_skipped_with_a_one_line_warning_and_counted(tiny_yaml, tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "imgs"
    for label in range(10):
        (folder / str(label)).mkdir(parents=True)
        for i in range(5):  # 5 per class: val_fraction 0.2 gives each class a validation image
            Image.new("RGB", (8, 8), (25 * label, 10 * i, 100)).save(folder / str(label) / f"{i}.png")
    (folder / "3" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    config = tiny_yaml(trials=1, subset=40)
    args = ["search", "--config", str(config), "--study-dir", str(tmp_path / "s"), "--dataset", str(folder)]
    assert cli.main(args) == 0
    err = capsys.readouterr().err
    shown = [line for line in err.splitlines() if "could not be decoded" in line]
    assert len(shown) == 1, err
    assert shown[0].startswith(f"pdenas: warning: skipped 1 image(s) in {folder} that could not be decoded (first: 3/broken.png")
    assert len(complete(load(tmp_path / "s"))) == 1


def test_nan_from_an_unstable_dt_fails_the_trial_with_the_reason(tiny_yaml, tmp_path):
    path = tiny_yaml(trials=2, subset=120)
    text = path.read_text().replace("global_layer: [true, false]", "global_layer: [true]\n  global_init: [random]")
    # the paper's layer: its output is the solver's, so dt = 20 gives NaN (the identity form starts at y = f)
    text = text.replace("iterations: {low: 1, high: 2}", "iterations: {low: 6, high: 6}")
    path.write_text(text.replace("dt: {low: 0.1, high: 0.3, log: true}", "dt: {low: 20.0, high: 20.0}"))
    events: list[tuple[str, dict]] = []
    counts = run_worker(StudyLocation(tmp_path / "s"), SearchConfig.from_yaml(path), max_failures=2,
                        on_event=lambda kind, info: events.append((kind, info)))
    assert counts.completed == 1 and counts.failed == 2  # the original, then two unstable candidates
    study = load(tmp_path / "s")
    assert study.trials[0].state == TrialState.COMPLETE and record(study.trials[0]).reference
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert len(failed) == 2
    for t in failed:  # in the stage-wise step (the Global layer trains there first), or when the assembled candidate runs
        reason = record(t).failure
        assert "\n" not in reason
        assert reason.startswith(("DistillError: the stage-wise step of layer", "TrainingDiverged: ", "GlobalLayerUnstableError: ")), reason
        assert "nan" in reason or "not finite" in reason or "non-finite" in reason, reason
    shown = [info["reason"] for kind, info in events if kind == "fail"]
    assert shown == [record(t).failure for t in failed]
    print(f"COUNTS unstable_dt: requested=2 finished={counts.completed} failed={counts.failed} retried=0 lost=0")


# ------------------------------------------------------------------------------------ retries


def _trial_with_a_constraint(study: optuna.Study) -> optuna.trial.FrozenTrial:
    study.enqueue_trial({"layer1.keep": 2})
    trial = study.ask()
    trial.suggest_int("layer1.keep", 1, 5)
    trial.set_constraint("max_macs", 123.0)
    return study.get_trials(deepcopy=False)[trial.number]


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_retries_measure_their_own_constraints(tmp_path):
    """Optuna stores a constraint per name (``constraints:max_macs``): a retry (of a stale trial, or of a
    queued trial asked beyond the target) must not inherit the dead trial's value, or the retry's own
    ``set_constraint`` would be ignored."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    from pdenas.search._runner import _requeue_unneeded
    from pdenas.search._storage import RetryStaleTrial

    study = optuna.create_study(storage=open_storage(StudyLocation(tmp_path), create=True), directions=["maximize", "minimize"])
    dead = _trial_with_a_constraint(study)
    assert dead.constraints == {"max_macs": 123.0}
    RetryStaleTrial(max_retry=3)(study, dead)
    retry = study.trials[-1]
    assert retry.state == TrialState.WAITING and record(retry).retry_of == dead.number
    assert retry.params == dead.params and retry.constraints == {}

    # a retry queued by Optuna's own callback carries the constraint; asked beyond the target, it goes back
    # to the queue without it
    study.tell(study.ask(), state=TrialState.PRUNED)  # the retry above, not needed here
    RetryHeartbeatStaleTrialCallback()(study, _trial_with_a_constraint(study))
    asked = study.ask()
    assert study.trials[asked.number].constraints == {"max_macs": 123.0}
    _requeue_unneeded(study, asked)
    again = study.trials[-1]
    assert again.state == TrialState.WAITING and again.params == {"layer1.keep": 2} and again.constraints == {}

    trial = study.ask()  # runs the plan again: its own constraint counts
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Optuna warns when a constraint that is already set is ignored
        trial.set_constraint("max_macs", -7.0)
    assert study.trials[trial.number].constraints == {"max_macs": -7.0}
