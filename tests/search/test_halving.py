"""Multi-objective successive halving (``pdenas/search/_halving.py``, issue 15): rung decisions on a real
study on disk against a hand-worked example, promotions made once, rungs surviving kill -9, two
workers sharing rungs, and the ``halving:`` section's one-line errors."""

from __future__ import annotations

import csv
import hashlib
import json
import multiprocessing
import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from pdenas.search import SearchConfig, StudyLocation, TrialRecord, open_storage, plan_key, search
from pdenas.search._halving import Rungs, promote_stopped, rank, rung_images
from pdenas.search._config import STAGE_RUNGS, HalvingConfig

from .conftest import first_arrivals, pdenas_cmd, run_pdenas

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

HALVING = "halving:\n  enabled: true\n  min_images: 60\n  eta: 2\n"


@pytest.mark.parametrize(("value", "mode"), [("accuracy", "accuracy"), ("loss", "loss"), ("off", "off"), (True, "loss"), (False, "off")])
def test_stage_rung_modes_and_the_first_files_booleans(value, mode):
    config = SearchConfig.from_dict({"halving": {"enabled": True, "stage_rung": value}})
    assert config.halving.stage_rung == mode
    assert SearchConfig.from_dict(config.to_dict()) == config  # round-trips
    assert SearchConfig().halving.stage_rung == "accuracy"


def test_rungs_are_min_images_times_powers_of_eta_below_the_budget():
    assert rung_images(HalvingConfig(enabled=True, min_images=60, eta=2), 480) == [60, 120, 240]
    assert rung_images(HalvingConfig(enabled=True, min_images=2000, eta=3), 90_000) == [2000, 6000, 18000, 54000]
    assert rung_images(HalvingConfig(enabled=True, min_images=500, eta=3), 500) == []


def _study(tmp_path: Path) -> tuple[optuna.Study, optuna.storages.BaseStorage, StudyLocation]:
    location = StudyLocation(tmp_path / "study")
    storage = open_storage(location, create=True)
    study = optuna.create_study(storage=storage, study_name=location.study_name, directions=["maximize", "minimize"])
    return study, storage, location


def _arrive(study, storage, location, config, plan: int, accuracy: float, macs: float, *, reached=()) -> tuple[optuna.Trial, Rungs]:
    """A trial of plan ``plan`` reaching rung 1 with this accuracy and MACs (``reached``: rungs it takes over)."""
    trial = study.ask()
    trial.suggest_int("plan", 0, 100)
    TrialRecord.write(trial, plan={"plan": plan})
    rungs = Rungs(study, trial, location, storage, config, key=f'{{"plan": {plan}}}', costs=(macs,), training=[100],
                  checkpoint=location.directory / "unused.pt", reached=list(reached))
    return trial, rungs


def test_promotion_decisions_match_a_hand_worked_example(tmp_path):
    """Five plans reach rung 1 (eta = 2) in this order; score = (-accuracy, MACs), both minimised.

    ======  ========  ====  =====================================================================
    plan    accuracy  MACs  when it arrives (n trials at the rung, the top ceil(n/2) go on)
    ======  ========  ====  =====================================================================
    A (1)   0.90      4     n=1 < eta: goes on
    B (2)   0.80      2     n=2, keep 1: A and B both on front 0, both ends (crowding inf), the tie
                            goes to the earlier trial: A 0, B 1 -> B stops
    C (3)   0.70      3     n=3, keep 2: B dominates C (front 1): A 0, B 1, C 2 -> C stops
    D (4)   0.60      1     n=4, keep 2: front 0 = A, B, D; crowding A inf, D inf, B (0.9-0.6)/0.3 +
                            (4-1)/3 = 2: A 0, D 1, B 2, C 3 -> D goes on
    E (5)   0.85      5     n=5, keep 3: A dominates E, front 1 = C, E (both inf): C 3, E 4 -> E stops
    ======  ========  ====  =====================================================================

    Then a promotion pass: B is now at place 2 < 3 -> queued once (C, at 3, and E are not); a second
    pass queues nothing. The promoted trial takes over B's rungs and, judged again with the rung as it
    is now (B's entry replaced by its own, same plan), goes on.
    """
    study, storage, location = _study(tmp_path)
    config = SearchConfig(halving=HalvingConfig(enabled=True, min_images=100, eta=2))
    expected = {"A": (True, 0, 1), "B": (False, 1, 2), "C": (False, 2, 3), "D": (True, 1, 4), "E": (False, 4, 5)}
    numbers = {}
    for plan, (name, accuracy, macs) in enumerate((("A", 0.90, 4), ("B", 0.80, 2), ("C", 0.70, 3), ("D", 0.60, 1), ("E", 0.85, 5)), 1):
        trial, rungs = _arrive(study, storage, location, config, plan, accuracy, macs)
        go_on = rungs.decide(1, 100, accuracy=accuracy)
        entry = rungs.reached[-1]
        assert (go_on, entry.position, entry.of) == expected[name], name
        assert entry.score == (-accuracy, macs)
        numbers[name] = trial.number
        if go_on:
            study.tell(trial, [accuracy, macs])
        else:
            study.tell(trial, state=TrialState.PRUNED)

    records = {r.number: r for r in map(TrialRecord.from_trial, study.get_trials())}
    assert {name for name, n in numbers.items() if records[n].stopped_at is not None} == {"B", "C", "E"}
    assert records[numbers["B"]].finished and records[numbers["B"]].state == TrialState.PRUNED

    assert promote_stopped(study, storage, location, eta=2) == [numbers["B"]]
    assert promote_stopped(study, storage, location, eta=2) == []  # claimed: never twice
    queued = study.get_trials(states=(TrialState.WAITING,))
    assert len(queued) == 1 and TrialRecord.from_trial(queued[0]).promoted_from == numbers["B"]

    promoted = study.ask()  # the queued promotion
    assert TrialRecord.from_trial(promoted).promoted_from == numbers["B"]
    assert promoted.suggest_int("plan", 0, 100) == study.trials[numbers["B"]].params["plan"]  # B's plan again
    TrialRecord.write(promoted, plan={"plan": 2})
    rungs = Rungs(study, promoted, location, storage, config, key='{"plan": 2}', costs=(2.0,), training=[100],
                  checkpoint=location.directory / "unused.pt", reached=list(records[numbers["B"]].rungs or ()))
    assert rungs.rejudge()
    assert (rungs.reached[-1].position, rungs.reached[-1].of) == (2, 5)  # five plans: B counted once


def test_a_promoted_plan_keeps_its_arrival_and_is_not_promoted_again(tmp_path):
    """A plan promoted and judged again in a new trial keeps its place among its ties (its first arrival at
    the rung), so the rung does not stop what the promotion let through and then promote it again, for ever
    (the CIFAR-10 sampler study's random search did that 490 times).

    eta = 2; score = (-accuracy, MACs). P (0.95, 3) and Q (0.90, 1) form front 0; B (0.85, 3.5) and X (0.80, 2)
    front 1, both ends of it (crowding inf: tied, the earlier arrival first); S (0.75, 3.6) and R (0.70, 4)
    trail. Arrivals P, Q, B, X, R, S: every one after P stops (Q at 1 of 2, B at 2 of 3, X at 3 of 4, R, S).
    With six at the rung the top 3 go on: P 0, Q 1, B 2 -> Q and B promoted. Judged again, B is still 2 of 6
    (placed as the latest trial it would be 3, behind X, and stopped): it goes on, and nothing is promoted again.
    """
    study, storage, location = _study(tmp_path)
    config = SearchConfig(halving=HalvingConfig(enabled=True, min_images=100, eta=2))
    plans = {"P": (1, 0.95, 3.0), "Q": (2, 0.90, 1.0), "B": (3, 0.85, 3.5), "X": (4, 0.80, 2.0), "R": (5, 0.70, 4.0), "S": (6, 0.75, 3.6)}
    numbers = {}
    for name, (plan, accuracy, macs) in plans.items():
        trial, rungs = _arrive(study, storage, location, config, plan, accuracy, macs)
        go_on = rungs.decide(1, 100, accuracy=accuracy)
        assert go_on == (name == "P"), name
        study.tell(trial, [accuracy, macs] if go_on else None, state=None if go_on else TrialState.PRUNED)
        numbers[name] = trial.number

    assert promote_stopped(study, storage, location, eta=2) == [numbers["Q"], numbers["B"]]
    records = {r.number: r for r in map(TrialRecord.from_trial, study.get_trials())}
    for name in ("Q", "B"):
        plan, accuracy, macs = plans[name]
        promoted = study.ask()
        assert TrialRecord.from_trial(promoted).promoted_from == numbers[name]
        promoted.suggest_int("plan", 0, 100)
        TrialRecord.write(promoted, plan={"plan": plan})
        rungs = Rungs(study, promoted, location, storage, config, key=f'{{"plan": {plan}}}', costs=(macs,), training=[100],
                      checkpoint=location.directory / "unused.pt", reached=list(records[numbers[name]].rungs or ()))
        assert rungs.rejudge(), name
        assert (rungs.reached[-1].position, rungs.reached[-1].of) == ({"Q": 1, "B": 2}[name], 6)
        study.tell(promoted, [accuracy, macs])
    assert promote_stopped(study, storage, location, eta=2) == []


def test_rank_orders_fronts_then_crowding_then_index():
    # front 0: (0, 3), (1, 1), (3, 0) -> ends inf, middle finite; front 1: (2, 2)
    assert rank([(1, 1), (2, 2), (0, 3), (3, 0)]) == [2, 3, 0, 1]


def _promote_in_a_loop(directory: str, rounds: int, out: str) -> None:
    location = StudyLocation(Path(directory))
    storage = open_storage(location)
    study = optuna.load_study(study_name=location.study_name, storage=storage)
    promoted = []
    for _ in range(rounds):
        promoted += promote_stopped(study, storage, location, eta=2)
    Path(out).write_text(",".join(map(str, promoted)))


def test_two_workers_promote_each_stopped_trial_once(tmp_path):
    """Two processes race to promote from one study: every qualifying trial is queued exactly once."""
    study, storage, location = _study(tmp_path)
    config = SearchConfig(halving=HalvingConfig(enabled=True, min_images=100, eta=2))
    stopped = []
    for plan in range(1, 9):  # a falling accuracy at equal MACs: each new arrival stops; later ones push the rung up
        trial, rungs = _arrive(study, storage, location, config, plan, 1.0 - plan / 20, 1.0)
        if rungs.decide(1, 100, accuracy=1.0 - plan / 20):
            study.tell(trial, [1.0 - plan / 20, 1.0])
        else:
            study.tell(trial, state=TrialState.PRUNED)
            stopped.append(trial.number)
    assert stopped  # some were stopped when they arrived, and now qualify (n = 8: keep 4)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_promote_in_a_loop, args=(str(location.directory), 15, str(tmp_path / f"w{i}.txt"))) for i in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    promoted = [int(n) for i in range(2) for n in (tmp_path / f"w{i}.txt").read_text().split(",") if n]
    queued = [TrialRecord.from_trial(t).promoted_from for t in study.get_trials(states=(TrialState.WAITING,))]
    assert sorted(promoted) == sorted(queued)
    assert len(set(queued)) == len(queued) > 0  # each at most once
    print(f"COUNTS two_workers_promote: stopped={stopped} promoted={sorted(promoted)}")


# --------------------------------------------------------------------------------- real searches


def _records(study_dir: Path) -> dict[int, TrialRecord]:
    location = StudyLocation(study_dir)
    study = optuna.load_study(study_name=location.study_name, storage=open_storage(location))
    return {r.number: r for r in map(TrialRecord.from_trial, study.get_trials())}


def test_a_stopped_trials_rungs_survive_kill_9_and_resume(tiny_yaml, tmp_path):
    config = tiny_yaml(trials=8, epochs=2, subset=120, extra=HALVING)
    study_dir = tmp_path / "study"
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(pdenas_cmd("search", "--config", str(config), "--study-dir", str(study_dir)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    stopped: dict[int, TrialRecord] = {}
    deadline = time.monotonic() + 180
    try:
        while not stopped and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.3)
            if (study_dir / "study.log").is_file():
                try:
                    stopped = {n: r for n, r in _records(study_dir).items() if r.stopped_at is not None}
                except Exception:  # the journal is being written
                    continue
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert stopped, "no trial was stopped at a rung before the search ended"
    result = run_pdenas("search", "--config", str(config), "--study-dir", str(study_dir), timeout=300, env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    after = _records(study_dir)
    for number, record in stopped.items():
        assert after[number].state == TrialState.PRUNED and after[number].rungs == record.rungs
    assert sum(r.finished for r in after.values()) >= 8
    assert all(r.state != TrialState.RUNNING for r in after.values())
    rows = {int(row["number"]): row for row in csv.DictReader(open(study_dir / "trials.csv", newline=""))}  # the report's table
    for number, record in stopped.items():
        row = rows[number]
        assert row["state"] == "PRUNED" and row["failure"].startswith("stopped by successive halving at ")
        assert [entry["go_on"] for entry in json.loads(row[f"user_attrs_{TrialRecord.key('rungs')}"])] == [e.go_on for e in record.rungs]


def test_two_workers_share_the_rungs(tiny_yaml, tmp_path):
    """Every arrival at a rung sees all earlier ones, from either worker: the counts 'of n' a rung's
    plans saw when they first got there are 1, 2, 3, ... without a repeat (two workers deciding at once
    without the shared lock would both see the same n). No stopped trial is promoted twice."""
    config = tiny_yaml(trials=8, epochs=1, subset=120, extra=HALVING)
    study_dir = tmp_path / "study"
    result = run_pdenas("search", "--config", str(config), "--study-dir", str(study_dir), "--workers", "2", timeout=300,
                        env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    records = _records(study_dir)
    workers = {r.worker for r in records.values() if r.rungs}
    assert len(workers) == 2
    for rung in (0, 1):
        first_seen = first_arrivals(records.values(), rung)
        assert first_seen == list(range(1, len(first_seen) + 1)), (rung, first_seen)
    promoted = [r.promoted_from for r in records.values() if r.promoted_from is not None]
    assert len(promoted) == len(set(promoted))
    print(f"COUNTS two_workers_share_rungs: states={[r.state.name for r in records.values()]} promoted={promoted}")


@pytest.mark.parametrize("mode", STAGE_RUNGS)
def test_rung_0_scores_what_stage_rung_names(tiny_yaml, tmp_path, mode):
    """``accuracy``: the assembled candidate's accuracy before fine-tuning (the trial's initial_accuracy);
    ``loss``: the plan's summed stage-wise losses; ``off``: no rung 0, the first rung comes after training."""
    torch.set_num_threads(1)
    location = StudyLocation(tmp_path / "study")
    config = SearchConfig.from_yaml(tiny_yaml(trials=5, epochs=2, subset=120, extra=HALVING + f"  stage_rung: {mode}\n"))
    search(config, location=location)
    compressed = [r for r in _records(location.directory).values() if not r.reference and r.rungs and r.promoted_from is None]
    assert len(compressed) >= 3
    for record in compressed:
        first = record.rungs[0]
        if mode == "off":
            assert all(e.rung >= 1 for e in record.rungs)
            continue
        assert (first.rung, first.images) == (0, 0), record
        if mode == "accuracy":
            assert first.accuracy == pytest.approx(record.initial_accuracy) and first.stage_loss is None
            assert first.score[0] == pytest.approx(-record.initial_accuracy)
        else:
            assert first.stage_loss == pytest.approx(sum(s.loss for s in record.stages.values())) and first.accuracy is None
            assert first.score[0] == pytest.approx(first.stage_loss)
        assert first.score[1] == record.macs  # the cost beside it


def test_an_impossible_first_rung_is_refused_in_one_line(tiny_yaml, tmp_path):
    config = tiny_yaml(extra="halving:\n  enabled: true\n  min_images: 100000\n")
    result = run_pdenas("search", "--config", str(config), "--study-dir", str(tmp_path / "s"), timeout=120, env={"OMP_NUM_THREADS": "1"})
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if "halving" in line]
    assert len(lines) == 1 and "'halving.min_images' = 100,000 is not below the images the budget trains on (240 = " in lines[0], output


def test_a_stopped_trial_is_promoted_by_the_next_search_and_continues_from_its_state(tiny_yaml, tmp_path):
    """What a user does: search, then search again with more trials. Worse plans reaching the rung later
    (here added by hand) put a stopped trial back in its rung's top 1/eta; the next search queues it
    once, and the promoted trial takes over its rungs and continues from the saved training state."""
    torch.set_num_threads(1)
    location = StudyLocation(tmp_path / "study")
    config = SearchConfig.from_yaml(tiny_yaml(trials=6, epochs=2, subset=120, extra=HALVING))
    search(config, location=location)
    study = optuna.load_study(study_name=location.study_name, storage=open_storage(location))
    records = [TrialRecord.from_trial(t) for t in study.get_trials()]
    stopped = [r for r in records if r.stopped_at is not None and r.stopped_at.rung >= 1]
    assert stopped, [(r.number, r.state.name, r.rungs) for r in records]
    target = stopped[0]
    stop = target.stopped_at
    state = location.directory / "halving" / f"{hashlib.sha256(plan_key(target.plan).encode()).hexdigest()[:20]}.pt"
    assert state.is_file()  # the stopped trial's training state, where it stopped
    for i in range(2 * stop.of + 2):  # worse plans at its rung: zero accuracy and more MACs than any
        study.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED, user_attrs=TrialRecord.attrs(
            plan={"synthetic": i}, rungs=[{**stop.__dict__, "score": [0.0, 1e12], "accuracy": 0.0, "go_on": False}])))
    finished = sum(r.finished for r in map(TrialRecord.from_trial, study.get_trials()))
    search(config.with_overrides(trials=finished + 3), location=location)

    records = {r.number: r for r in map(TrialRecord.from_trial, study.get_trials())}
    promotions = [r for r in records.values() if r.promoted_from == target.number]
    assert len(promotions) == 1
    promoted = promotions[0]
    assert promoted.plan == target.plan and promoted.state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert promoted.rungs[: len(target.rungs) - 1] == target.rungs[:-1]  # taken over
    again = promoted.rungs[len(target.rungs) - 1]
    assert again.rung == stop.rung and again.go_on and again.score == stop.score  # judged again: now in the top 1/eta
    assert len(promoted.rungs) > len(target.rungs) or promoted.state == TrialState.COMPLETE
    if promoted.state == TrialState.COMPLETE:  # trained to the end from that state, which is then removed
        assert promoted.accuracy is not None and not state.exists()
