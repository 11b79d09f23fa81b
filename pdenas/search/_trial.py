"""One trial: suggest a plan, build the candidate, cost it, then (``_candidate``) assemble it from the
trained original's distilled stages, fine-tune it with the original as teacher and score it.

A candidate over a constraint is recorded with its costs and not trained. A plan that an earlier
trial already trained reuses that result. A candidate that diverges or raises is recorded as failed
with the reason, and the search goes on. With successive halving (``halving:``) a candidate that is not
good enough at a rung is stopped there and told PRUNED, its rungs recorded (``_halving``). The original
model's trial (trial 0) is trained (or, with ``weights``, scored as it is) and its trained weights kept;
every other trial waits for them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from ..cost import Latency, measure_latency, profile
from ..surgery import CompressionPlan
from .._optuna import storage_of
from ._candidate import train_candidate
from ._halving import start_rungs
from ._context import SearchContext, build_candidate, plan_key
from ._original import keep_original, use_trained_original
from ._record import TrialRecord
from ._storage import fail_stale_trials
from ._suggest import suggest_plan

__all__ = ["TrialOutcome", "run_trial"]

EpochCallback = Callable[[int, int, float], None]
EventCallback = Callable[[str, dict], None]
WAIT_FOR_DUPLICATES = 3600.0  # seconds to wait for another worker training the same plan


@dataclass(frozen=True)
class TrialOutcome:
    state: TrialState
    values: list[float] | None
    failure: str | None = None


def run_trial(
    study: optuna.Study, trial: optuna.Trial, ctx: SearchContext, *, on_epoch: EpochCallback | None = None,
    on_event: EventCallback | None = None,
) -> TrialOutcome:
    """Evaluate ``trial``; the caller tells Optuna the outcome. ``on_event(kind, info)`` hears ``original_wait``
    (for the original's trial, ``info["original"]`` its number) and ``stages`` (the stage-wise step's results)."""
    start = time.perf_counter()
    config = ctx.config
    emit = on_event or (lambda kind, info: None)
    reference = TrialRecord.from_trial(trial).reference
    plan = CompressionPlan.identity(ctx.stages) if reference else suggest_plan(trial, ctx.stages, config.space)
    key = plan_key(plan)
    TrialRecord.write(trial, plan=plan.to_dict(), plan_text=plan.describe(ctx.stages), seed=config.seed)

    candidate = build_candidate(ctx, plan)  # its costs (the weights do not change them)
    cost = profile(candidate, ctx.input_size)
    feasible = _set_constraints(trial, ctx, cost.macs, cost.params)
    TrialRecord.write(trial, macs=cost.macs, conv_macs=cost.conv_macs, params=cost.params, feasible=feasible)
    latency_ms = _measure_latency(trial, ctx, candidate) if config.measures_latency else None
    if not feasible and not reference:  # the original is trained anyway: it is every report's reference
        TrialRecord.write(trial, wall_time=time.perf_counter() - start)
        return TrialOutcome(TrialState.COMPLETE, _values(config.objectives, 0.0, cost, latency_ms))

    earlier = None if reference else _find_result(study, trial.number, key, WAIT_FOR_DUPLICATES)
    if earlier is not None:
        TrialRecord.write(
            trial, accuracy=earlier.accuracy, train_time=earlier.train_time, eval_time=earlier.eval_time,
            epochs=earlier.epochs, reused_from=earlier.number, initial_accuracy=earlier.initial_accuracy,
            stages=earlier.stages, wall_time=time.perf_counter() - start,
            fine_tuning_discarded=earlier.fine_tuning_discarded or None,
        )
        return TrialOutcome(TrialState.COMPLETE, _values(config.objectives, earlier.accuracy, cost, latency_ms))

    rungs = None
    if config.halving.enabled and not reference:
        rungs = start_rungs(study, trial, ctx, key, _costs(config.objectives, cost, latency_ms), storage_of(study))
        if rungs.reached and not rungs.reached[-1].go_on and not rungs.rejudge():  # an earlier trial of the plan stopped there
            TrialRecord.write(trial, failure=rungs.failure(), wall_time=time.perf_counter() - start)
            return TrialOutcome(TrialState.PRUNED, None, rungs.failure())
    if not reference:  # every candidate compresses the trained original
        use_trained_original(ctx, study, wait=True,
                             on_wait=lambda original: emit("original_wait", {"trial": trial.number, "original": original.number,
                                                                      "worker": original.worker}))
    trained = train_candidate(ctx, plan, reference=reference, on_epoch=on_epoch, rungs=rungs)
    if trained.stages:
        TrialRecord.write(trial, stages=trained.stages, stagewise_time=trained.stagewise_time)
        emit("stages", {"trial": trial.number, "stages": trained.stages, "initial_accuracy": trained.initial_accuracy})
    if reference and config.weights is None:
        TrialRecord.write(trial, weights_fingerprint=keep_original(ctx, trained.model, study=study, number=trial.number))
    result = trained.result
    if trained.stopped or result is None:
        assert rungs is not None
        TrialRecord.write(
            trial, failure=rungs.failure(), initial_accuracy=trained.initial_accuracy, wall_time=time.perf_counter() - start,
            train_time=None if result is None else result.train_time,
        )
        return TrialOutcome(TrialState.PRUNED, None, rungs.failure())
    TrialRecord.write(
        trial, accuracy=result.accuracy, initial_accuracy=trained.initial_accuracy, train_time=result.train_time,
        eval_time=result.eval_time, epochs=result.epochs, wall_time=time.perf_counter() - start,
        fine_tuning_discarded=trained.fine_tuning_discarded or None,
    )
    return TrialOutcome(TrialState.COMPLETE, _values(config.objectives, result.accuracy, cost, latency_ms))


def _measure_latency(trial: optuna.Trial, ctx: SearchContext, candidate: Any) -> float:
    """The candidate's latency on the CPU as the ``latency:`` section says (runtime, batch size, threads),
    recorded with how it was measured and what measuring it took."""
    start = time.perf_counter()
    setup = ctx.config.latency
    measured: Latency = measure_latency(
        candidate.to("cpu"), ctx.input_size, runtime=setup.runtime, batch_size=setup.batch_size,  # type: ignore[arg-type]
        threads=setup.threads, device="cpu",  # the CPU: training moves the candidate to its device afterwards
    )
    TrialRecord.write(
        trial, latency_ms=measured.median_ms, latency_runtime=measured.runtime, latency_batch_size=measured.batch_size,
        latency_threads=measured.threads, latency_time=time.perf_counter() - start,
    )
    return measured.median_ms


def _values(objectives: list[str], accuracy: float, cost: Any, latency_ms: float | None) -> list[float]:
    by_name = {"accuracy": accuracy, "macs": float(cost.macs), "params": float(cost.params), "latency": latency_ms}
    return [float(by_name[name]) for name in objectives]


def _costs(objectives: list[str], cost: Any, latency_ms: float | None) -> tuple[float, ...]:
    """The objectives other than accuracy, each minimised: what a rung ranks beside the accuracy or loss."""
    by_name = {"macs": float(cost.macs), "params": float(cost.params), "latency": latency_ms}
    return tuple(float(by_name[name]) for name in objectives if name != "accuracy")  # type: ignore[arg-type]


def _set_constraints(trial: optuna.Trial, ctx: SearchContext, macs: int, params: int) -> bool:
    """Record each constraint as value - limit (feasible when <= 0, Optuna's convention)."""
    feasible = True
    for name, limit, value in (("max_macs", ctx.max_macs, macs), ("max_params", ctx.max_params, params)):
        if limit is None:
            continue
        trial.set_constraint(name, float(value - limit))
        feasible &= value <= limit
    return feasible


def _find_result(study: optuna.Study, number: int, key: str, wait: float) -> TrialRecord | None:
    """A trained candidate's trial with the same plan; waits while another worker is training it (and, on a shared
    storage, stops waiting when that worker's heartbeats stop: its trial is then failed as stale)."""
    deadline = time.monotonic() + wait
    while True:
        fail_stale_trials(study)
        running = False
        for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)):
            other = TrialRecord.from_trial(trial)
            if other.number == number or other.reference or other.plan is None or plan_key(other.plan) != key:
                continue  # the original's trial trains (or scores) the original itself, not a candidate
            if other.state == TrialState.COMPLETE and other.accuracy is not None:
                return other
            if other.state == TrialState.RUNNING and other.number < number:
                running = True
        if not running or time.monotonic() > deadline:
            return None
        time.sleep(1.0)
