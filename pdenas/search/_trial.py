"""One trial: suggest a plan, build the candidate, cost it, train it on the budget, score it.

A candidate over a constraint is recorded with its costs and not trained. A plan that an earlier
trial already trained reuses that result. A candidate that diverges or raises is recorded as failed
with the reason, and the search goes on.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..cost import latency, profile
from ..surgery import CompressionPlan, compress
from ..train import train_model
from . import _attrs as A
from ._context import SearchContext
from ._storage import fail_stale_trials
from ._suggest import suggest_plan

__all__ = ["TrialOutcome", "run_trial", "plan_key"]

EpochCallback = Callable[[int, int, float], None]


@dataclass(frozen=True)
class TrialOutcome:
    state: TrialState
    values: list[float] | None
    failure: str | None = None


def plan_key(plan: CompressionPlan | dict[str, Any]) -> str:
    data = plan.to_dict() if isinstance(plan, CompressionPlan) else plan
    return json.dumps(data, sort_keys=True)


def run_trial(
    study: optuna.Study, trial: optuna.Trial, ctx: SearchContext, *, on_epoch: EpochCallback | None = None,
    wait_for_duplicates: float = 3600.0,
) -> TrialOutcome:
    """Evaluate ``trial``; the caller tells Optuna the outcome."""
    start = time.perf_counter()
    config = ctx.config
    reference = bool(trial.user_attrs.get(A.REFERENCE))
    plan = CompressionPlan.identity(ctx.stages) if reference else suggest_plan(trial, ctx.stages, config.space)
    key = plan_key(plan)
    trial.set_user_attr(A.PLAN, plan.to_dict())
    trial.set_user_attr(A.PLAN_TEXT, plan.describe(ctx.stages))
    trial.set_user_attr(A.SEED, config.seed)

    candidate = compress(ctx.base_model, plan, ctx.example_input())
    cost = profile(candidate, ctx.input_size)
    trial.set_user_attr(A.MACS, cost.macs)
    trial.set_user_attr(A.CONV_MACS, cost.conv_macs)
    trial.set_user_attr(A.PARAMS, cost.params)
    feasible = _set_constraints(trial, ctx, cost.macs, cost.params)
    trial.set_user_attr(A.FEASIBLE, feasible)
    latency_ms = None
    if ctx.original_latency_ms is not None:
        latency_ms = latency(candidate, ctx.input_size, repeats=10) * 1000
        trial.set_user_attr(A.LATENCY_MS, latency_ms)
    if not feasible and not reference:  # the original is trained anyway: it is every report's reference
        trial.set_user_attr(A.WALL_TIME, time.perf_counter() - start)
        return TrialOutcome(TrialState.COMPLETE, _values(config.objectives, 0.0, cost, latency_ms))

    earlier = _find_result(study, trial.number, key, wait_for_duplicates)
    if earlier is not None:
        for attr in (A.ACCURACY, A.TRAIN_TIME, A.EVAL_TIME, A.EPOCHS):
            if attr in earlier.user_attrs:
                trial.set_user_attr(attr, earlier.user_attrs[attr])
        trial.set_user_attr(A.REUSED_FROM, earlier.number)
        trial.set_user_attr(A.WALL_TIME, time.perf_counter() - start)
        return TrialOutcome(TrialState.COMPLETE, _values(config.objectives, earlier.user_attrs[A.ACCURACY], cost, latency_ms))

    teacher = ctx.base_model if config.budget.distillation > 0 else None
    result = train_model(
        candidate, ctx.data, config.budget, seed=config.seed, device=ctx.device, teacher=teacher, on_epoch=on_epoch
    )
    trial.set_user_attr(A.ACCURACY, result.accuracy)
    trial.set_user_attr(A.TRAIN_TIME, result.train_time)
    trial.set_user_attr(A.EVAL_TIME, result.eval_time)
    trial.set_user_attr(A.EPOCHS, result.epochs)
    trial.set_user_attr(A.WALL_TIME, time.perf_counter() - start)
    return TrialOutcome(TrialState.COMPLETE, _values(config.objectives, result.accuracy, cost, latency_ms))


def _values(objectives: list[str], accuracy: float, cost: Any, latency_ms: float | None) -> list[float]:
    by_name = {"accuracy": accuracy, "macs": float(cost.macs), "params": float(cost.params), "latency": latency_ms}
    return [float(by_name[name]) for name in objectives]


def _set_constraints(trial: optuna.Trial, ctx: SearchContext, macs: int, params: int) -> bool:
    """Record each constraint as value - limit (feasible when <= 0, Optuna's convention)."""
    feasible = True
    for name, limit, value in (("max_macs", ctx.max_macs, macs), ("max_params", ctx.max_params, params)):
        if limit is None:
            continue
        trial.set_constraint(name, float(value - limit))
        feasible &= value <= limit
    return feasible


def _find_result(study: optuna.Study, number: int, key: str, wait: float) -> FrozenTrial | None:
    """A trained trial with the same plan; waits while another worker is training it (and, on a shared
    storage, stops waiting when that worker's heartbeats stop: its trial is then failed as stale)."""
    deadline = time.monotonic() + wait
    while True:
        fail_stale_trials(study)
        running = False
        for other in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)):
            if other.number == number or A.PLAN not in other.user_attrs:
                continue
            if plan_key(other.user_attrs[A.PLAN]) != key:
                continue
            if other.state == TrialState.COMPLETE and A.ACCURACY in other.user_attrs:
                return other
            if other.state == TrialState.RUNNING and other.number < number:
                running = True
        if not running or time.monotonic() > deadline:
            return None
        time.sleep(1.0)
