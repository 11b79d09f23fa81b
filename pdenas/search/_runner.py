"""Running a search: one or more worker processes pull trials from one Optuna study until the study
holds the requested number of finished trials.

The original model is trial 0 (the identity plan) so that every report has its reference point: without
``weights`` it is trained on the study's budget, and every later trial compresses the weights it trained
(``_original``); with ``weights`` it is the given model, scored as it is. A trial left RUNNING by a process that died (kill -9, power loss) is marked failed
and its plan queued again; completed trials are never touched. In a study directory that happens when
the next ``pdenas search`` starts (it holds the directory's lock, so every RUNNING trial is dead); on a
storage server (``--storage``), workers on any machine send heartbeats and fail each other's stale trials
(see ``_storage``).

A worker asks for a new trial only while the finished trials plus the running ones are below the
target; otherwise it waits, because a running trial may still fail (or turn out stale) and need
replacing, and it stops once the target is reached. So the study never overshoots its target by more
than the trials that were already running when it was reached.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import os
import socket
import sys
import time
import warnings
import zlib
from dataclasses import dataclass
from typing import Callable

import optuna
import torch
from optuna.trial import TrialState

from .. import __version__
from .._optuna import PlanGPSampler, frozen_trial, is_enqueued, is_heartbeat_enabled, retried_trial, storage_of, trial_id, without_constraints
from .._util import first_line
from ..cost import LatencyError, check_runtime
from ._candidate import STAGES_DIR
from ._halving import HALVING_DIR, promote_stopped
from ._context import SearchContext, build_context
from ._original import OriginalUnavailable, check_original_kept
from ._record import StudyRecord, TrialRecord
from ._config import SearchConfig, SearchConfigError
from ._storage import (
    StudyError,
    fail_and_retry,
    fail_stale_trials,
    heartbeat,
    setup_lock,
)
from ._study import (
    DirectoryLock,
    StudyLocation,
    check_compatible,
    open_storage,
    read_config,
    repair_journal,
    write_config,
)
from ._trial import TrialOutcome, run_trial

__all__ = ["SearchResult", "search", "run_worker", "create_or_load_study", "recover_stale_trials"]



@dataclass(frozen=True)
class SearchResult:
    location: StudyLocation
    completed: int  # finished trials in the study
    failed: int
    interrupted: bool = False


def make_sampler(config: SearchConfig, *, worker: int = 0, shared: bool = False, resumed_at: int = 0) -> optuna.samplers.BaseSampler:
    """The study's sampler for one worker. Workers on one machine get distinct, reproducible seeds, and a
    resumed study (``resumed_at`` trials already in it) a new one, or its random draws would repeat the
    plans of the first run; on a shared storage, where any number of processes on any machines join
    with the same command, the seed also depends on the process (host and pid)."""
    seed = config.sampler.seed if config.sampler.seed is not None else config.seed
    seed = seed + 1000 * worker + 7919 * resumed_at  # distinct streams per worker and run, reproducible
    if shared:
        seed = (seed + zlib.crc32(f"{socket.gethostname()}:{os.getpid()}".encode())) % 2**31
    seed %= 2**32  # numpy's range
    settings = config.sampler
    if settings.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if settings.name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=settings.population)
    with warnings.catch_warnings():  # experimental options of TPE (group) and GP's release notes
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if settings.name == "gp":
            # log expected hypervolume improvement over the parameters every plan has (the Global-layer
            # settings of a stage only exist when it has one: those are drawn at random, hence no warning;
            # the original's trial, which has no parameters, left out); categorical choices are one-hot
            # dimensions of its kernel; constraints from trial.set_constraint
            return PlanGPSampler(seed=seed, n_startup_trials=settings.startup_trials, warn_independent_sampling=False)
        # grouped: the Global-layer settings of a stage form their own group, modelled jointly when present
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=settings.startup_trials, multivariate=True, group=True)


def create_or_load_study(
    location: StudyLocation, config: SearchConfig, ctx: SearchContext | None, *, worker: int = 0,
    storage: optuna.storages.BaseStorage | None = None,
) -> tuple[optuna.Study, optuna.storages.BaseStorage]:
    storage = storage if storage is not None else open_storage(location, create=True, wait=True)
    with setup_lock(storage, location.study_name):  # workers starting at once: one creates, the others check
        try:
            study = optuna.create_study(
                storage=storage, study_name=location.study_name, directions=config.directions,
                sampler=make_sampler(config, worker=worker, shared=location.storage_url is not None),
                load_if_exists=True,
            )
        except ValueError as err:  # an existing study with other objectives
            raise StudyError(f"{location.describe()} cannot be used: {first_line(err, limit=300)}") from None
        check_compatible(study, config, location)
        existing = len(study.get_trials(deepcopy=False))
        if existing:
            study.sampler = make_sampler(config, worker=worker, shared=location.storage_url is not None, resumed_at=existing)
        if study.metric_names is None:  # Optuna's own tools (trials_dataframe, optuna-dashboard) name the values
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(list(config.objectives))
        if StudyRecord.from_study(study, records=[]).config is None and ctx is not None:
            StudyRecord.write(
                study, config=config.to_dict(),
                versions={"pdenas": __version__, "torch": torch.__version__, "optuna": optuna.__version__},
                original={**ctx.original.to_dict(), "stage_macs": ctx.stage_macs},  # its latency comes from its trial (trial 0)
            )
        check_original_kept(study, config)
        if not study.get_trials(deepcopy=False):
            study.enqueue_trial({}, user_attrs=TrialRecord.attrs(reference=True))
    return study, storage


def recover_stale_trials(study: optuna.Study, storage: optuna.storages.BaseStorage, *, only_worker: str | None = None) -> int:
    """Fail trials left RUNNING by dead processes and queue their plans again; returns how many."""
    count = 0
    dead = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if only_worker is None or TrialRecord.from_trial(t).worker == only_worker]
    if is_heartbeat_enabled(storage_of(study)):  # a shared storage: the same retry (and limit) as a stale trial
        return len(fail_and_retry(study, [trial_id(t) for t in dead], "the worker running it died"))
    for trial in dead:
        TrialRecord.write_to_storage(storage, trial_id(trial), failure="the worker running it died (stale trial); re-queued")
        storage.set_trial_state_values(trial_id(trial), TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs=TrialRecord.from_trial(trial).retry_attrs())
        count += 1
    return count


def _finished(study: optuna.Study) -> int:
    """Trials that count towards the target: completed, or stopped at a rung by successive halving."""
    return sum(TrialRecord.from_trial(t).finished for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def _progress(study: optuna.Study, *, before: int | None = None) -> tuple[int, int]:
    """(finished trials, trials running in live workers; with ``before``, only those numbered below it)."""
    trials = study.get_trials(deepcopy=False)
    done = sum(t.state == TrialState.COMPLETE or (t.state == TrialState.PRUNED and TrialRecord.from_trial(t).finished) for t in trials)
    running = sum(t.state == TrialState.RUNNING and (before is None or t.number < before) and _alive(t, study) for t in trials)
    return done, running


def _surplus(study: optuna.Study, number: int, target: int) -> bool:
    """True when the trial just asked for is beyond the target (others got there first)."""
    done, ahead = _progress(study, before=number)
    return done + ahead >= target


def _alive(trial: optuna.trial.FrozenTrial, study: optuna.Study) -> bool:
    """False only for a trial in a study directory whose worker was a process on this machine that no
    longer exists. (On a shared storage a dead worker's trial is found by its missing heartbeats: two
    machines may share a host name.)"""
    if is_heartbeat_enabled(storage_of(study)):
        return True
    host, _, pid = (TrialRecord.from_trial(trial).worker or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:
        pass
    return True


def _ask(study: optuna.Study) -> optuna.Trial:
    with warnings.catch_warnings():  # heartbeats are pdenas' own with ask/tell (see _storage.heartbeat)
        warnings.filterwarnings("ignore", message=".*Heartbeat of storage is supposed to be used with Study.optimize.*")
        return study.ask()


def _requeue_unneeded(study: optuna.Study, trial: optuna.Trial) -> None:
    """A queued trial (a retry, the original) asked for beyond the target: queue it again, in case
    the running trials that made it unneeded fail."""
    frozen = frozen_trial(study, trial)
    keep = TrialRecord.from_trial(frozen).requeue_attrs()
    if not keep and not is_enqueued(frozen):
        return
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING, params=frozen.params, distributions=frozen.distributions,
        user_attrs=keep, system_attrs=without_constraints(frozen.system_attrs),
    ))


def run_worker(
    location: StudyLocation,
    config: SearchConfig,
    *,
    worker: int = 0,
    ctx: SearchContext | None = None,
    on_event: Callable[[str, dict], None] | None = None,
    max_failures: int | None = None,
) -> TrialOutcomeCounts:
    """Pull and run trials until the study has ``config.trials`` finished trials."""
    ctx = ctx or build_context(config, location=location)
    study, storage = create_or_load_study(location, config, ctx, worker=worker)
    me = f"{socket.gethostname()}:{os.getpid()}"
    emit = on_event or (lambda kind, info: None)
    counts = TrialOutcomeCounts()
    max_failures = max_failures if max_failures is not None else max(10, config.trials)
    waiting = False
    while True:
        stale = fail_stale_trials(study)
        if stale:
            emit("stale", {"trials": stale})
        done, running = _progress(study)
        if done >= config.trials:
            break
        if counts.failed >= max_failures:
            counts.stopped = f"{counts.failed} trials failed in this run; see the failure reasons with pdenas status"
            emit("stop", {"reason": counts.stopped})
            break
        if done + running >= config.trials:  # the running trials reach the target, unless some fail: wait
            if not waiting:
                emit("waiting", {"running": running})
                waiting = True
            time.sleep(WAIT_POLL)
            continue
        waiting = False
        if config.halving.enabled:  # a stopped trial now in its rung's top 1/eta goes before a new plan
            promoted = promote_stopped(study, storage, location, config.halving.eta)
            if promoted:
                emit("promoted", {"trials": promoted})
        trial = _ask(study)
        with heartbeat(study, trial_id(trial)):
            if _surplus(study, trial.number, config.trials):  # another worker asked at the same moment
                TrialRecord.write(trial, failure="not needed: the study reached its trial target")
                study.tell(trial, state=TrialState.PRUNED)
                _requeue_unneeded(study, trial)
                continue
            _run_one(study, trial, ctx, me, emit, counts)
    return counts


@dataclass
class TrialOutcomeCounts:
    completed: int = 0
    failed: int = 0
    taken_over: int = 0  # trials declared stale by another worker while this one ran them
    stopped_at_rung: int = 0  # trials successive halving stopped (told PRUNED)
    stopped: str | None = None  # why the worker stopped before the target (too many failures)


WAIT_POLL = 1.0  # seconds between looks at the study while the last trials run elsewhere
STOPPED = 3  # exit status of a worker process that stopped after too many failed trials


def _run_one(
    study: optuna.Study, trial: optuna.Trial, ctx: SearchContext, me: str,
    emit: Callable[[str, dict], None], counts: TrialOutcomeCounts,
) -> None:
    """Run one trial and tell Optuna how it went."""
    TrialRecord.write(trial, worker=me)
    retried = retried_trial(frozen_trial(study, trial))
    if TrialRecord.from_trial(trial).retry_of is None and retried is not None:  # queued by Optuna's own retry
        TrialRecord.write(trial, retry_of=retried)
    emit("start", {"trial": trial.number})

    def on_epoch(epoch: int, epochs: int, loss: float, _trial: optuna.Trial = trial) -> None:
        TrialRecord.write(_trial, progress=(epoch, epochs))
        emit("epoch", {"trial": _trial.number, "epoch": epoch, "epochs": epochs, "loss": loss})

    try:
        outcome = run_trial(study, trial, ctx, on_epoch=on_epoch, on_event=emit)
    except KeyboardInterrupt:
        retry = TrialRecord.from_trial(trial).retry_attrs()
        TrialRecord.write(trial, failure="interrupted by the user (Ctrl-C); re-queued for the next run")
        study.tell(trial, state=TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs=retry)
        emit("interrupted", {"trial": trial.number})
        raise
    except OriginalUnavailable as err:  # no candidate can be built (trial 0 failed): record why, stop the worker
        with contextlib.suppress(Exception):
            TrialRecord.write(trial, failure=f"{type(err).__name__}: {first_line(err)}")
            study.tell(trial, state=TrialState.FAIL)
        raise
    except StudyError:  # the storage is gone (StorageUnavailable): stop this worker, say why
        raise
    except optuna.exceptions.UpdateFinishedTrialError:
        _taken_over(trial, emit, counts)
        return
    except Exception as err:  # the candidate failed; record why and go on
        reason = f"{type(err).__name__}: {first_line(err, limit=300)}"
        outcome = TrialOutcome(TrialState.FAIL, None, reason)
    try:
        if outcome.state == TrialState.FAIL:
            TrialRecord.write(trial, failure=outcome.failure or "failed")
            study.tell(trial, state=TrialState.FAIL)
            counts.failed += 1
            emit("fail", {"trial": trial.number, "reason": outcome.failure})
        elif outcome.state == TrialState.PRUNED:  # stopped at a rung (successive halving): its rungs are recorded
            study.tell(trial, state=TrialState.PRUNED)
            counts.stopped_at_rung += 1
            emit("pruned", {"trial": trial.number, "reason": outcome.failure,
                            "record": TrialRecord.from_trial(frozen_trial(study, trial))})
        else:
            study.tell(trial, values=outcome.values)
            counts.completed += 1
            emit("complete", {"trial": trial.number, "values": outcome.values,
                              "record": TrialRecord.from_trial(frozen_trial(study, trial))})
    except optuna.exceptions.UpdateFinishedTrialError:
        _taken_over(trial, emit, counts)
    except ValueError as err:  # "Cannot tell a FAIL trial": failed as stale in the meantime
        if "Cannot tell a" not in str(err):
            raise
        _taken_over(trial, emit, counts)


def _taken_over(trial: optuna.Trial, emit: Callable[[str, dict], None], counts: TrialOutcomeCounts) -> None:
    """Our trial was failed as stale by another worker (our heartbeats did not reach the storage for
    longer than the grace period); its retry runs the plan again, so this result is dropped."""
    counts.taken_over += 1
    emit("taken_over", {"trial": trial.number})


def search(
    config: SearchConfig,
    *,
    location: StudyLocation,
    workers: int = 1,
    on_event: Callable[[str, dict], None] | None = None,
) -> SearchResult:
    """Run (or resume) the search in ``location`` with ``workers`` processes on this machine.

    ``on_event(kind, info)`` hears what happens: ``study`` (``info["study"]``, once it exists), ``start``,
    ``epoch``, ``complete`` (with the trial's record), ``fail``, ``stop``, ``refresh`` (every half second
    while worker processes run the trials), and the recoveries.
    """
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    if config.measures_latency:  # a runtime that cannot run here: said before any work
        try:
            check_runtime(config.latency.runtime)
        except LatencyError as err:
            raise SearchConfigError(f"'latency.runtime': {err}") from None
    emit = on_event or (lambda kind, info: None)
    embedded = location.storage_url is None
    with DirectoryLock(location.directory) if embedded else contextlib.nullcontext():
        if embedded:
            if location.config_path.exists():
                read_config(location.directory)  # refuses a directory of an incompatible pdenas, before any work
            notes = repair_journal(location) + _remove_partial_files(location)
            if notes:
                emit("repaired", {"notes": notes})
        # an unreadable journal, an unreachable server: say so before any work (and create nothing yet)
        storage = open_storage(location, wait=True) if not embedded or location.journal_path.exists() else None
        ctx = build_context(config, location=location)
        study, storage = create_or_load_study(location, config, ctx, storage=storage)
        write_config(location, config)
        emit("study", {"study": study})
        if embedded:
            recovered = recover_stale_trials(study, storage)
            if recovered:
                emit("recovered", {"count": recovered})
        interrupted = False
        if workers == 1:
            try:
                run_worker(location, config, ctx=ctx, on_event=emit)
            except KeyboardInterrupt:
                interrupted = True
        else:
            interrupted = _run_processes(location, config, workers, study, storage, emit)
        failed = len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))
        return SearchResult(location, _finished(study), failed, interrupted)


def _remove_partial_files(location: StudyLocation) -> list[str]:
    """Temporary files of distilled stage variants left by a process killed while writing one (call only
    while holding the directory's lock: no one else writes then). They were never entries; removing them
    only frees the disk."""
    partial = [path for folder in (location.directory / STAGES_DIR, location.directory / HALVING_DIR) if folder.is_dir()
               for path in sorted(folder.glob(".*.tmp*"))]
    for path in partial:
        path.unlink(missing_ok=True)
    return [f"removed {len(partial)} partial stage variant or training state file(s) left by a process that died while writing"] if partial else []


def _worker_main(location: StudyLocation, config: SearchConfig, worker: int, threads: int) -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C marks the running trial
    torch.set_num_threads(threads)
    try:
        counts = run_worker(location, config, worker=worker)
    except KeyboardInterrupt:
        return
    except StudyError as err:  # one line, no traceback (e.g. the storage server went away)
        print(f"pdenas worker {worker}: error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
    if counts.stopped:  # tell the parent, which shows it; restarting the worker cannot help
        sys.exit(STOPPED)


def _run_processes(
    location: StudyLocation,
    config: SearchConfig,
    workers: int,
    study: optuna.Study,
    storage: optuna.storages.BaseStorage,
    emit: Callable[[str, dict], None],
) -> bool:
    """Start ``workers`` processes; replace one that dies while trials remain, recovering its trial."""
    mp = multiprocessing.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // workers)
    procs = [mp.Process(target=_worker_main, args=(location, config, i, threads), daemon=False) for i in range(workers)]
    for proc in procs:
        proc.start()
    restarts = 0
    handled: set[int] = set()
    try:
        while any(p.is_alive() for p in procs):
            emit("refresh", {})
            time.sleep(0.5)
            for i, proc in enumerate(procs):
                if proc.exitcode in (None, 0) or proc.pid in handled:
                    continue
                handled.add(proc.pid)
                if proc.exitcode == 2:  # stopped with a one-line error (storage gone): restarting cannot help
                    continue
                if proc.exitcode == STOPPED:
                    emit("stop", {"reason": f"worker {i} stopped: too many trials failed in this run; see the failure "
                                            "reasons with pdenas status"})
                    continue
                recover_stale_trials(study, storage, only_worker=f"{socket.gethostname()}:{proc.pid}")
                if _finished(study) < config.trials and restarts < 3 * workers:
                    restarts += 1
                    procs[i] = mp.Process(target=_worker_main, args=(location, config, i, threads))
                    procs[i].start()
        return False
    except KeyboardInterrupt:
        for proc in procs:
            proc.join(timeout=30)
        return True
    except BaseException:  # this process lost the storage: do not leave workers behind
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        for proc in procs:
            proc.join(timeout=30)
        raise
