"""Turning an Optuna trial into a compression plan (Kag & Saligrama, CVPR 2022, Sec. 4: keep a few
blocks per stage and add one Global layer).

Parameter names are ``<stage>.<choice>`` (``layer2.keep``, ``layer2.global``, ``layer2.iterations``,
``layer2.dt``, ...), or ``all.<choice>`` when the space is shared by all stages. Choices with a single
option are fixed, not suggested; Global-layer settings are only suggested when a Global layer is.
"""

from __future__ import annotations

from typing import Any, Sequence

import optuna

from ..nn import GlobalLayerConfig
from ..surgery import CompressionPlan, Stage, StagePlan
from ._space import SearchSpaceError, StageChoices

__all__ = ["select_stages", "suggest_plan"]


def select_stages(stages: Sequence[Stage], choices: StageChoices) -> list[Stage]:
    """The stages the search may touch; an unknown name is an error listing the model's stages."""
    if choices.stages == "all":
        return list(stages)
    by_name = {s.name: s for s in stages}
    for name in choices.stages:
        if name not in by_name:
            raise SearchSpaceError(
                f"'space.stages' names stage '{name}', which the model does not have; "
                f"its stages are: {', '.join(by_name)} (see pdenas info --model ...)"
            )
    return [by_name[name] for name in choices.stages]


def suggest_plan(trial: optuna.Trial, stages: Sequence[Stage], choices: StageChoices) -> CompressionPlan:
    if choices.shared:
        smallest_m = min(s.m for s in stages)
        shared = _suggest_stage(trial, "all", smallest_m, choices)
        plans = {s.name: shared for s in stages}
    else:
        plans = {s.name: _suggest_stage(trial, s.name, s.m, choices) for s in stages}
    return CompressionPlan(stages=plans)


def _suggest_stage(trial: optuna.Trial, prefix: str, m: int, choices: StageChoices) -> StagePlan:
    high = m if choices.keep.high is None else min(choices.keep.high, m)
    low = min(choices.keep.low, high)
    keep = _int(trial, f"{prefix}.keep", low, high)
    use_global = _categorical(trial, f"{prefix}.global", choices.global_layer)
    if not use_global:
        return StagePlan(keep=keep, global_layer=None)
    config = GlobalLayerConfig(
        iterations=_int(trial, f"{prefix}.iterations", choices.iterations.low, choices.iterations.high),
        dt=_float(trial, f"{prefix}.dt", choices.dt.low, choices.dt.high, log=choices.dt.log),
        diffusion=_categorical(trial, f"{prefix}.diffusion", choices.diffusion),
        residual=_categorical(trial, f"{prefix}.residual", choices.residual),
    )
    return StagePlan(keep=keep, global_layer=config)


def _int(trial: optuna.Trial, name: str, low: int, high: int | None) -> int:
    high = low if high is None else high
    return low if low == high else trial.suggest_int(name, low, high)


def _float(trial: optuna.Trial, name: str, low: float, high: float, *, log: bool) -> float:
    return low if low == high else trial.suggest_float(name, low, high, log=log)


def _categorical(trial: optuna.Trial, name: str, options: list[Any]) -> Any:
    unique = list(dict.fromkeys(options))
    return unique[0] if len(unique) == 1 else trial.suggest_categorical(name, unique)
