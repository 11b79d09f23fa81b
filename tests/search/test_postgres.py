"""Workers sharing one study on a real PostgreSQL server (started by the ``postgres_server`` fixture).

Worker processes are real ``pdenas worker`` commands; where a second worker only has to carry on, it
runs in this process through ``pdenas.cli.main`` (the same code, without another interpreter start).
Each test prints its counts (requested, finished, retried, lost): ``pytest -rP`` shows them.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from pdenas import cli
from pdenas.search import StudyRecord, TrialRecord, plan_key
from pdenas.search._storage import STALE

from .conftest import first_arrivals, pdenas_cmd

record = TrialRecord.from_trial

SECRET = "Sup3rSecretPw"
SHARED = ("--heartbeat", "1", "--grace-period", "4")


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


_storages: dict[str, optuna.storages.RDBStorage] = {}


def load(url: str, name: str) -> optuna.Study:
    if url not in _storages:  # one engine per database, its connections checked after a server restart
        _storages[url] = optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    return optuna.load_study(study_name=name, storage=_storages[url])


def states(study: optuna.Study) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def complete(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def report_counts(name: str, study: optuna.Study, requested: int, before: dict[int, list[float]] | None = None) -> None:
    done = {t.number: t.values for t in complete(study)}
    lost = sum(done.get(n) != v for n, v in (before or {}).items())
    retried = sum(record(t).retry_of is not None for t in study.trials)
    print(f"COUNTS {name}: requested={requested} finished={len(done)} retried={retried} lost={lost} states={states(study)}")


def start_worker(config: Path, url: str, name: str, study_dir: Path, *extra: str) -> subprocess.Popen:
    study_dir.mkdir(parents=True, exist_ok=True)
    args = ["worker", "--config", str(config), "--storage", url, "--study-name", name, "--study-dir", str(study_dir), *SHARED, *extra]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(pdenas_cmd(*args), stdout=open(study_dir / "out.txt", "w"), stderr=subprocess.STDOUT, env=env)


def worker_here(config: Path, url: str, name: str, study_dir: Path, *extra: str) -> int:
    """One more worker, in this process."""
    return cli.main(["worker", "--config", str(config), "--storage", url, "--study-name", name,
                     "--study-dir", str(study_dir), *SHARED, *extra])


def finish(procs: list[subprocess.Popen], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(timeout=max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise


def output(study_dir: Path) -> str:
    return (study_dir / "out.txt").read_text()


def wait_for_training(url: str, name: str, *, min_number: int, pid: int | None = None, timeout: float = 300,
                      alive: subprocess.Popen | None = None) -> int:
    """The number of a RUNNING trial that has finished at least one epoch (by worker ``pid``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None:
            assert alive.poll() is None, "the worker ended before it could be interrupted"
        try:
            study = load(url, name)
        except Exception:  # not created yet, or the server is restarting
            time.sleep(0.3)
            continue
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = record(t).worker or ""
            if t.number >= min_number and record(t).progress is not None and (pid is None or worker.endswith(f":{pid}")):
                epoch, epochs = record(t).progress
                if epoch < epochs:
                    return t.number
        time.sleep(0.2)
    raise AssertionError("no trial started training in time")


def trials_csv(directory: Path) -> list[dict[str, str]]:
    with open(directory / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_three_workers_finish_exactly_the_target_and_never_train_a_plan_twice(postgres_server, tiny_yaml, tmp_path):
    url = postgres_server.create_database("three")
    config = tiny_yaml(trials=12, subset=120)
    procs = [start_worker(config, url, "three", tmp_path / f"w{i}") for i in range(3)]
    finish(procs)
    for i, proc in enumerate(procs):
        assert proc.returncode == 0, output(tmp_path / f"w{i}")
    study = load(url, "three")
    done = complete(study)
    assert len(done) == 12  # no overshoot
    assert set(states(study)) <= {"COMPLETE", "PRUNED"}  # nothing left running, waiting or failed
    assert all("not needed" in record(t).failure for t in study.trials if t.state == TrialState.PRUNED)
    assert sum(record(t).reference for t in done) == 1
    assert len({record(t).worker for t in done}) >= 2
    trained = [plan_key(record(t).plan) for t in done if record(t).reused_from is None]
    assert len(trained) == len(set(trained)), "a plan was trained twice"
    by_number = {t.number: t for t in done}
    for t in done:
        if record(t).reused_from is not None:
            source = by_number[record(t).reused_from]
            assert plan_key(record(source).plan) == plan_key(record(t).plan)
            assert record(source).accuracy == record(t).accuracy

    # every worker compressed the very original trial 0 trained, fetched from the storage into its own folder
    from pdenas import create_model, load_weights
    from pdenas.distill import model_fingerprint
    from pdenas.search import ORIGINAL_FILE, StudyRecord

    fingerprint = StudyRecord.from_study(study).original.weights_fingerprint
    kept = [tmp_path / f"w{i}" / ORIGINAL_FILE for i in range(3) if (tmp_path / f"w{i}" / ORIGINAL_FILE).is_file()]
    assert fingerprint is not None and len(kept) >= 2  # trial 0's worker wrote it, the others copied it
    for path in kept:
        assert model_fingerprint(load_weights(create_model("resnet_tiny", in_channels=1), path)) == fingerprint

    # the report, from a worker's study directory and from "anywhere" (the URL), says the same
    assert cli.main(["report", str(tmp_path / "w0")]) == 0
    assert cli.main(["report", "--storage", url, "--study-name", "three", "--out", str(tmp_path / "anywhere")]) == 0
    rows = trials_csv(tmp_path / "w0")
    assert rows == trials_csv(tmp_path / "anywhere")
    finished = {int(r["number"]): r for r in rows if r["state"] == "COMPLETE"}
    assert set(finished) == set(by_number)
    for number, row in finished.items():
        assert float(row["values_accuracy"]) == pytest.approx(by_number[number].values[0], abs=1e-12)
        assert float(row["values_macs"]) == by_number[number].values[1]
    report_counts("three_workers", study, 12)


def test_kill_9_a_worker_mid_trial_another_retries_it(postgres_server, tiny_yaml, tmp_path):
    url = postgres_server.create_database("kill")
    config = tiny_yaml(trials=5, epochs=3, subset=120)
    victim = start_worker(config, url, "kill", tmp_path / "victim")
    try:
        number = wait_for_training(url, "kill", min_number=1, pid=victim.pid, alive=victim)
        before = {t.number: t.values for t in complete(load(url, "kill"))}
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
    finally:
        if victim.poll() is None:
            victim.kill()
    assert load(url, "kill").trials[number].state == TrialState.RUNNING  # nothing could record the death
    assert worker_here(config, url, "kill", tmp_path / "other") == 0
    study = load(url, "kill")
    killed = study.trials[number]
    assert killed.state == TrialState.FAIL and record(killed).failure.startswith(STALE)
    retries = [t for t in study.trials if record(t).retry_of == number]
    assert len(retries) == 1
    retry = retries[0]
    assert retry.state == TrialState.COMPLETE and retry.params == killed.params
    assert retry.system_attrs["failed_trial"] == number and retry.system_attrs["retry_history"] == [number]
    assert not record(retry).worker.endswith(f":{victim.pid}")
    assert len(complete(study)) == 5
    for n, values in before.items():  # nothing completed is lost
        assert study.trials[n].state == TrialState.COMPLETE and study.trials[n].values == values
    report_counts("kill_9_worker", study, 5, before)


def test_server_restart_while_workers_run(postgres_server, tiny_yaml, tmp_path):
    url = postgres_server.create_database("restart")
    config = tiny_yaml(trials=5, epochs=3, subset=120)
    procs = [start_worker(config, url, "restart", tmp_path / f"w{i}") for i in range(2)]
    try:
        wait_for_training(url, "restart", min_number=1, alive=procs[0])
        before = {t.number: t.values for t in complete(load(url, "restart"))}
        postgres_server.restart(down_for=2)
        finish(procs)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for i, proc in enumerate(procs):  # both reconnected and carried on
        assert proc.returncode == 0, output(tmp_path / f"w{i}")
    study = load(url, "restart")
    assert len(complete(study)) == 5
    assert all(study.trials[n].values == v for n, v in before.items())
    report_counts("server_restart_reconnect", study, 5, before)


def test_server_gone_longer_than_reconnect_is_one_clear_line_and_rerun_completes(
    postgres_server, tiny_yaml, tmp_path, capsys
):
    postgres_server.create_database("gone")
    url = postgres_server.url("gone", password=SECRET)  # the server trusts loopback: the password is only shown
    config = tiny_yaml(trials=3, epochs=3, subset=120)
    stopped = threading.Event()

    def stop_while_training() -> None:
        try:
            wait_for_training(url, "gone", min_number=1, timeout=300)
        finally:
            postgres_server.stop()
            stopped.set()

    watcher = threading.Thread(target=stop_while_training, daemon=True)
    watcher.start()
    try:
        rc = worker_here(config, url, "gone", tmp_path / "w", "--reconnect", "3")
    finally:
        watcher.join(timeout=300)
        if not stopped.is_set():
            postgres_server.stop()
        postgres_server.start()
    out, err = capsys.readouterr()
    assert rc == 2
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"pdenas: error: lost the connection to postgresql://postgres:***@127.0.0.1:{postgres_server.port}/gone")
    assert "rerun the worker to continue" in line and "Traceback" not in err
    assert SECRET not in out + err
    study = load(postgres_server.url("gone"), "gone")
    interrupted = [t for t in study.trials if t.state == TrialState.RUNNING]
    assert len(interrupted) == 1
    before = {t.number: t.values for t in complete(study)}

    assert worker_here(config, url, "gone", tmp_path / "w") == 0  # rerun: the study completes
    out, err = capsys.readouterr()
    assert SECRET not in out + err
    study = load(postgres_server.url("gone"), "gone")
    assert len(complete(study)) == 3
    dead = study.trials[interrupted[0].number]
    assert dead.state == TrialState.FAIL and record(dead).failure.startswith(STALE)
    assert any(record(t).retry_of == dead.number and t.state == TrialState.COMPLETE for t in study.trials)
    for name in ("report.html", "trials.csv", "pareto.csv"):
        assert SECRET not in (tmp_path / "w" / name).read_text()
    assert oct((tmp_path / "w" / "config.json").stat().st_mode & 0o777) == "0o600"
    report_counts("server_gone_then_rerun", study, 3, before)


def test_two_studies_in_one_database_and_a_different_config_is_refused(postgres_server, tiny_yaml, tmp_path, capsys):
    url = postgres_server.create_database("two")
    config = tiny_yaml(trials=2, subset=120)
    other = tiny_yaml(trials=3, subset=120, name="other.yaml")
    other.write_text(other.read_text().replace("seed: 0", "seed: 1"))
    assert worker_here(config, url, "alpha", tmp_path / "alpha") == 0
    assert worker_here(other, url, "beta", tmp_path / "beta") == 0
    alpha, beta = load(url, "alpha"), load(url, "beta")
    assert len(alpha.trials) == 2 and len(beta.trials) == 3
    assert len(complete(alpha)) == 2 and len(complete(beta)) == 3
    assert StudyRecord.from_study(alpha).config["seed"] == 0 and StudyRecord.from_study(beta).config["seed"] == 1
    assert {t._trial_id for t in alpha.trials}.isdisjoint(t._trial_id for t in beta.trials)
    assert cli.main(["report", "--storage", url, "--study-name", "alpha", "--out", str(tmp_path / "ra")]) == 0
    assert [r["number"] for r in trials_csv(tmp_path / "ra")] == ["0", "1"]
    capsys.readouterr()

    # a worker with another model on alpha is refused, in one line, and adds nothing
    rc = worker_here(config, url, "alpha", tmp_path / "alpha2", "--model", "resnet20", "--trials", "3")
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "created with different settings (model: 'resnet_tiny' -> 'resnet20')" in err
    assert len(load(url, "alpha").trials) == 2
    report_counts("two_studies_alpha", alpha, 2)
    report_counts("two_studies_beta", beta, 3)


def test_unreachable_server_is_one_line_without_the_password(tiny_yaml, tmp_path, capsys):
    url = f"postgresql://someone:{SECRET}@127.0.0.1:1/nowhere"  # nothing listens on port 1
    rc = worker_here(tiny_yaml(), url, "x", tmp_path / "w", "--reconnect", "0")
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("pdenas: error: cannot open storage postgresql://someone:***@127.0.0.1:1/nowhere: ")
    assert SECRET not in err and err.count("\n") == 1
    rc = cli.main(["report", "--storage", url, "--study-name", "x", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and SECRET not in err and "postgresql://someone:***@127.0.0.1:1/nowhere" in err


def test_two_workers_share_successive_halving_rungs_on_the_server(postgres_server, tiny_yaml, tmp_path):
    """Successive halving across machines (issue 15): the rungs live in the study on the server and each
    decision is made under a PostgreSQL advisory lock, so every plan's first arrival at a rung saw all
    the earlier ones, from either worker (counts 'of n' 1, 2, 3, ... without a repeat or a gap), and no stopped
    trial is promoted twice."""
    url = postgres_server.create_database("halving")
    config = tiny_yaml(trials=8, subset=120, extra="halving:\n  enabled: true\n  min_images: 60\n  eta: 2\n")
    procs = [start_worker(config, url, "halving", tmp_path / f"w{i}") for i in range(2)]
    finish(procs)
    for i, proc in enumerate(procs):
        assert proc.returncode == 0, output(tmp_path / f"w{i}")
    study = load(url, "halving")
    records = sorted(map(record, study.trials), key=lambda r: r.number)
    assert sum(r.finished for r in records) >= 8 and not any(r.state == TrialState.RUNNING for r in records)
    stopped = [r for r in records if r.stopped_at is not None]
    assert stopped and len({r.worker for r in records if r.rungs}) == 2
    for rung in (0, 1):
        seen = first_arrivals(records, rung)
        assert seen == list(range(1, len(seen) + 1)), (rung, seen)
    promoted = [r.promoted_from for r in records if r.promoted_from is not None]
    assert len(promoted) == len(set(promoted))
    report_counts("two_workers_halving", study, 8)
