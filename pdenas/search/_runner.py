"""Running a search: one or more worker processes pull trials from one Optuna study until the study
holds the requested number of finished trials.

The original model is trial 0 (the identity plan, trained on the same budget) so that every report has
its reference point. A trial left RUNNING by a process that died (kill -9, power loss) is marked failed
and its plan queued again; completed trials are never touched.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import optuna
import torch
from optuna.trial import TrialState

from .. import __version__
from . import _attrs as A
from ._context import SearchContext, build_context
from ._space import SearchSpace
from ._study import DirectoryLock, StudyLocation, check_compatible, open_storage, write_config
from ._trial import TrialOutcome, run_trial

__all__ = ["SearchResult", "search", "run_worker", "create_or_load_study", "recover_stale_trials"]

log = logging.getLogger("pdenas.search")


@dataclass
class SearchResult:
    location: StudyLocation
    completed: int
    failed: int
    interrupted: bool = False
    report: Path | None = None
    messages: list[str] = field(default_factory=list)


def make_sampler(space: SearchSpace, *, worker: int = 0) -> optuna.samplers.BaseSampler:
    seed = space.sampler.seed if space.sampler.seed is not None else space.seed
    seed = seed + 1000 * worker  # distinct streams per worker, reproducible
    if space.sampler.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if space.sampler.name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=space.sampler.startup_trials, multivariate=True)


def create_or_load_study(
    location: StudyLocation, space: SearchSpace, ctx: SearchContext | None, *, worker: int = 0
) -> tuple[optuna.Study, optuna.storages.BaseStorage]:
    storage = open_storage(location)
    study = optuna.create_study(
        storage=storage, study_name=location.study_name, directions=space.directions,
        sampler=make_sampler(space, worker=worker), load_if_exists=True,
    )
    check_compatible(study, space, location)
    if A.CONFIG not in study.user_attrs and ctx is not None:
        study.set_user_attr(A.FORMAT, A.FORMAT_VERSION)
        study.set_user_attr(A.CONFIG, space.to_dict())
        study.set_user_attr(A.VERSIONS, {"pdenas": __version__, "torch": torch.__version__, "optuna": optuna.__version__})
        original = {**ctx.original.to_dict(), "latency_ms": ctx.original_latency_ms}
        study.set_user_attr(A.ORIGINAL, original)
    if not study.get_trials(deepcopy=False):
        study.enqueue_trial({}, user_attrs={A.REFERENCE: True})
    return study, storage


def recover_stale_trials(study: optuna.Study, storage: optuna.storages.BaseStorage, *, only_worker: str | None = None) -> int:
    """Fail trials left RUNNING by dead processes and queue their plans again; returns how many."""
    count = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if only_worker is not None and trial.user_attrs.get(A.WORKER) != only_worker:
            continue
        storage.set_trial_user_attr(trial._trial_id, A.FAILURE, "the worker running it died (stale trial); re-queued")
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        _requeue(study, trial.number, trial.params, trial.user_attrs)
        count += 1
    return count


def _requeue(study: optuna.Study, number: int, params: dict, user_attrs: dict) -> None:
    attrs = {A.RETRY_OF: number}
    if user_attrs.get(A.REFERENCE):
        attrs[A.REFERENCE] = True
    study.enqueue_trial(params, user_attrs=attrs)


def _finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def _surplus(study: optuna.Study, number: int, target: int) -> bool:
    """True when the trial just asked for is beyond the target (others got there first)."""
    trials = study.get_trials(deepcopy=False)
    done = sum(t.state == TrialState.COMPLETE for t in trials)
    ahead = sum(t.state == TrialState.RUNNING and t.number < number for t in trials)
    return done + ahead >= target


def run_worker(
    location: StudyLocation,
    space: SearchSpace,
    *,
    worker: int = 0,
    ctx: SearchContext | None = None,
    on_event: Callable[[str, dict], None] | None = None,
    max_failures: int | None = None,
) -> TrialOutcomeCounts:
    """Pull and run trials until the study has ``space.trials`` finished trials."""
    ctx = ctx or build_context(space)
    study, storage = create_or_load_study(location, space, ctx, worker=worker)
    me = f"{socket.gethostname()}:{os.getpid()}"
    emit = on_event or (lambda kind, info: None)
    counts = TrialOutcomeCounts()
    max_failures = max_failures if max_failures is not None else max(10, space.trials)
    while _finished(study) < space.trials:
        if counts.failed >= max_failures:
            emit("stop", {"reason": f"{counts.failed} trials failed in this run; see the failure reasons with pdenas status"})
            break
        trial = study.ask()
        if _surplus(study, trial.number, space.trials):
            trial.set_user_attr(A.FAILURE, "not needed: the study reached its trial target")
            study.tell(trial, state=TrialState.PRUNED)
            break
        trial.set_user_attr(A.WORKER, me)
        emit("start", {"trial": trial.number})

        def on_epoch(epoch: int, epochs: int, loss: float, _trial: optuna.Trial = trial) -> None:
            _trial.set_user_attr(A.PROGRESS, [epoch, epochs])
            emit("epoch", {"trial": _trial.number, "epoch": epoch, "epochs": epochs, "loss": loss})

        try:
            outcome = run_trial(study, trial, ctx, on_epoch=on_epoch)
        except KeyboardInterrupt:
            trial.set_user_attr(A.FAILURE, "interrupted by the user (Ctrl-C); re-queued for the next run")
            study.tell(trial, state=TrialState.FAIL)
            _requeue(study, trial.number, trial.params, trial.user_attrs)
            emit("interrupted", {"trial": trial.number})
            raise
        except Exception as err:  # the candidate failed; record why and go on
            reason = f"{type(err).__name__}: {_one_line(err)}"
            outcome = TrialOutcome(TrialState.FAIL, None, reason)
        if outcome.state == TrialState.FAIL:
            trial.set_user_attr(A.FAILURE, outcome.failure or "failed")
            study.tell(trial, state=TrialState.FAIL)
            counts.failed += 1
            emit("fail", {"trial": trial.number, "reason": outcome.failure})
        else:
            study.tell(trial, values=outcome.values)
            counts.completed += 1
            emit("complete", {"trial": trial.number, "values": outcome.values})
    return counts


@dataclass
class TrialOutcomeCounts:
    completed: int = 0
    failed: int = 0


def _one_line(err: BaseException) -> str:
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    return (lines[0] if lines else type(err).__name__)[:300]


def search(
    space: SearchSpace,
    *,
    location: StudyLocation,
    workers: int = 1,
    on_event: Callable[[str, dict], None] | None = None,
    display: Callable[[optuna.Study, list[multiprocessing.Process]], None] | None = None,
) -> SearchResult:
    """Run (or resume) the search in ``location`` with ``workers`` processes on this machine."""
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    embedded = location.storage_url is None
    lock = DirectoryLock(location.directory) if embedded else None
    if lock is not None:
        lock.__enter__()
    try:
        ctx = build_context(space)
        study, storage = create_or_load_study(location, space, ctx)
        write_config(location, space)
        if embedded:
            recovered = recover_stale_trials(study, storage)
            if recovered and on_event:
                on_event("recovered", {"count": recovered})
        interrupted = False
        if workers == 1:
            try:
                counts = run_worker(location, space, ctx=ctx, on_event=on_event)
            except KeyboardInterrupt:
                interrupted = True
        else:
            interrupted = _run_processes(location, space, workers, study, storage, display)
        finished = _finished(study)
        failed = len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))
        return SearchResult(location, finished, failed, interrupted)
    finally:
        if lock is not None:
            lock.__exit__(None, None, None)


def _worker_main(location: StudyLocation, space: SearchSpace, worker: int, threads: int) -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C marks the running trial
    torch.set_num_threads(threads)
    try:
        run_worker(location, space, worker=worker)
    except KeyboardInterrupt:
        pass


def _run_processes(
    location: StudyLocation,
    space: SearchSpace,
    workers: int,
    study: optuna.Study,
    storage: optuna.storages.BaseStorage,
    display: Callable[[optuna.Study, list[multiprocessing.Process]], None] | None,
) -> bool:
    """Start ``workers`` processes; replace one that dies while trials remain, recovering its trial."""
    mp = multiprocessing.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // workers)
    procs = [mp.Process(target=_worker_main, args=(location, space, i, threads), daemon=False) for i in range(workers)]
    for proc in procs:
        proc.start()
    restarts = 0
    handled: set[int] = set()
    try:
        while any(p.is_alive() for p in procs):
            if display is not None:
                display(study, procs)
            time.sleep(0.5)
            for i, proc in enumerate(procs):
                if proc.exitcode in (None, 0) or proc.pid in handled:
                    continue
                handled.add(proc.pid)
                recover_stale_trials(study, storage, only_worker=f"{socket.gethostname()}:{proc.pid}")
                if _finished(study) < space.trials and restarts < 3 * workers:
                    restarts += 1
                    procs[i] = mp.Process(target=_worker_main, args=(location, space, i, threads))
                    procs[i].start()
        return False
    except KeyboardInterrupt:
        for proc in procs:
            proc.join(timeout=30)
        return True
