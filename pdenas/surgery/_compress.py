"""Applying a compression plan (Kag & Saligrama, CVPR 2022, Sec. 4): in each stage keep the first
``keep`` blocks, drop the rest, and put a Global layer right after the last kept block.

The surgery works on a deep copy and keeps module paths stable: every dropped child becomes an
``nn.Identity`` in its slot (the stage's blocks after the first keep the shape, so an identity is
shape-safe) and the Global layer takes the slot of the first dropped block's first child. Kept
blocks and every layer outside the stages therefore keep their state-dict keys and their weights.

With ``init="identity"`` the Global layer is a :class:`pdenas.nn.GatedGlobalLayer` (y = f + a * G(f),
a = 0): its slot holds ``gate`` and ``layer.*`` (the Global layer's own keys), and the candidate computes
exactly what the same plan without the Global layer computes until ``a`` moves.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import Tensor, nn

from ..nn import GlobalLayer, with_init
from ._plan import CompressionPlan, StagePlan
from ._stages import Stage, find_stages_traced
from .._util import preserved_modes
from ._trace import output_shapes

__all__ = ["compress", "apply_plan"]


def compress(model: nn.Module, plan: CompressionPlan, example_input: Tensor, *, strict: bool = True) -> nn.Module:
    """A compressed copy of ``model``; ``model`` itself is not modified.

    Args:
        model: the network to compress.
        plan: per stage, the blocks to keep and the Global layer to add.
        example_input: a (B, C, H, W) batch the model accepts, used to find the stages.
        strict: refuse a plan naming a stage the model lacks; when False such entries are skipped.

    Where a stage keeps all m blocks and still gets a Global layer, the last child of its last
    block is wrapped as ``nn.Sequential(child, global_layer)``: that child's keys gain a ``.0``.

    Raises:
        PlanError: the plan does not fit the model's stages.
        NoStagesError: the model has no stage.
    """
    compressed = copy.deepcopy(model)
    stages, recorded = find_stages_traced(compressed, example_input, macs=False)
    plan.validate(stages, strict=strict)
    apply_plan(compressed, stages, plan)
    _check_output_shapes(compressed, example_input, recorded.output_shapes)
    return compressed


def apply_plan(model: nn.Module, stages: Sequence[Stage], plan: CompressionPlan) -> None:
    """Do the surgery in place on ``model``, whose stages are ``stages`` (``plan`` already validated)."""
    for stage in stages:
        stage_plan = plan.stages.get(stage.name)
        if stage_plan is not None and not stage_plan.is_untouched(stage.m):
            _compress_stage(model, stage, stage_plan)


def _compress_stage(model: nn.Module, stage: Stage, plan: StagePlan) -> None:
    dropped = stage.block_paths[plan.keep:]
    for block in dropped:
        for path in block:
            _set_module(model, path, nn.Identity())  # (B, C, H, W) -> same
    if plan.global_layer is None:
        return
    layer = with_init(GlobalLayer(stage.channels, plan.global_layer, name=stage.name))
    device, dtype = _placement(model)
    layer.to(device=device, dtype=dtype)
    layer.train(model.training)
    if dropped:
        _set_module(model, dropped[0][0], layer)
    else:  # keep == m: append the Global layer to the stage's last child
        last = stage.block_paths[-1][-1]
        _set_module(model, last, nn.Sequential(model.get_submodule(last), layer))


def _set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, module)  # Sequential/ModuleList children are attributes named '0', '1', ...


def _placement(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of the model's parameters (CPU and the default dtype if none)."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return torch.device("cpu"), torch.get_default_dtype()


def _check_output_shapes(model: nn.Module, example_input: Tensor, expected: object) -> None:
    with preserved_modes(model, False), torch.no_grad():
        got = output_shapes(model(example_input))
    if got != expected:  # a stage's blocks keep the shape, so this is a bug, not a user error
        raise RuntimeError(f"compression changed the model's output shape from {expected} to {got}; please report this")
