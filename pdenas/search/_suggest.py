"""Turning an Optuna trial into a compression plan (Kag & Saligrama, CVPR 2022, Sec. 4: keep a few
blocks per stage and add one Global layer).

Parameter names are ``<stage>.<choice>`` (``layer2.keep``, ``layer2.global``, ``layer2.iterations``,
``layer2.dt``, ``layer2.init``, ...), or ``all.<choice>`` when the space is shared by all stages. Choices
with a single option are fixed, not suggested; Global-layer settings are only suggested when a Global
layer is, and ``residual`` only for the ``random`` init (the ``identity`` form is residual already).
A dt range with a ``step`` is a grid: its values are rounded to the grid, so that equal choices give
equal plans (and reuse each other's distilled stages).
"""

from __future__ import annotations

from typing import Any, Sequence

import optuna

from ..nn import GlobalLayerConfig
from ..surgery import CompressionPlan, Stage, StagePlan
from ._config import SearchConfigError, SearchSpace

__all__ = ["select_stages", "suggest_plan"]


def select_stages(stages: Sequence[Stage], space: SearchSpace) -> list[Stage]:
    """The stages the search may touch; an unknown name is an error listing the model's stages."""
    if space.stages == "all":
        return list(stages)
    by_name = {s.name: s for s in stages}
    for name in space.stages:
        if name not in by_name:
            raise SearchConfigError(
                f"'space.stages' names stage '{name}', which the model does not have; "
                f"its stages are: {', '.join(by_name)} (see pdenas info --model ...)"
            )
    return [by_name[name] for name in space.stages]


def suggest_plan(trial: optuna.Trial, stages: Sequence[Stage], space: SearchSpace) -> CompressionPlan:
    if space.shared:
        smallest_m = min(s.m for s in stages)
        shared = _suggest_stage(trial, "all", smallest_m, space)
        plans = {s.name: shared for s in stages}
    else:
        plans = {s.name: _suggest_stage(trial, s.name, s.m, space) for s in stages}
    return CompressionPlan(stages=plans)


def _suggest_stage(trial: optuna.Trial, prefix: str, m: int, space: SearchSpace) -> StagePlan:
    high = m if space.keep.high is None else min(space.keep.high, m)
    low = min(space.keep.low, high)
    keep = _int(trial, f"{prefix}.keep", low, high)
    use_global = _categorical(trial, f"{prefix}.global", space.global_layer)
    if not use_global:
        return StagePlan(keep=keep, global_layer=None)
    iterations = _int(trial, f"{prefix}.iterations", space.iterations.low, space.iterations.high)
    dt = _float(trial, f"{prefix}.dt", space.dt.low, space.dt.high, log=space.dt.log, step=space.dt.step)
    diffusion = _categorical(trial, f"{prefix}.diffusion", space.diffusion)
    init = _categorical(trial, f"{prefix}.init", space.global_init)
    residual = False if init == "identity" else _categorical(trial, f"{prefix}.residual", space.residual)
    config = GlobalLayerConfig(iterations=iterations, dt=dt, diffusion=diffusion, residual=residual, init=init)
    return StagePlan(keep=keep, global_layer=config)


def _int(trial: optuna.Trial, name: str, low: int, high: int | None) -> int:
    high = low if high is None else high
    return low if low == high else trial.suggest_int(name, low, high)


def _float(trial: optuna.Trial, name: str, low: float, high: float, *, log: bool, step: float | None = None) -> float:
    if low == high:
        return low
    value = trial.suggest_float(name, low, high, log=log, step=step)
    return value if step is None else round(value, 10)  # 0.30000000000000004 -> 0.3: one value per grid point


def _categorical(trial: optuna.Trial, name: str, options: list[Any]) -> Any:
    unique = list(dict.fromkeys(options))
    return unique[0] if len(unique) == 1 else trial.suggest_categorical(name, unique)
