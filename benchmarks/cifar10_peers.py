"""The peer a user would pick instead of pdenas: structured channel pruning with Torch-Pruning (Fang et al.,
"DepGraph: Towards Any Structural Pruning", CVPR 2023; ``pip install torch-pruning``, a benchmark-only
dependency), pruned to the same MAC targets as pdenas' candidates and fine-tuned with the same recipe and
teacher.

The pruner is Torch-Pruning's ``MetaPruner`` over DepGraph's dependency groups with group L2-magnitude
importance (``GroupMagnitudeImportance(p=2)``, the paper's baseline criterion), one shot, the same ratio in
every layer (the classifier kept whole); the ratio is found by bisection so that the pruned model's conv
MACs (``pdenas.profile``, as for pdenas' candidates) land within 1 % of the target.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

import pdenas


@dataclass(frozen=True)
class Pruned:
    model: nn.Module
    ratio: float  # Torch-Pruning's channel pruning ratio
    conv_macs: int
    macs: int
    params: int


def prune_to_conv_macs(model: nn.Module, input_size: tuple[int, int, int], target: float, *, tolerance: float = 0.01,
                       steps: int = 30) -> Pruned:
    """A pruned copy of ``model`` whose conv MACs are within ``tolerance`` of ``target`` (or the closest found)."""
    import torch_pruning as tp  # benchmark-only dependency

    example = torch.zeros(1, *input_size)
    classifier = [m for m in model.modules() if isinstance(m, nn.Linear)][-1:]
    best: Pruned | None = None
    low, high = 0.0, 0.95
    for _ in range(steps):
        ratio = (low + high) / 2
        candidate = copy.deepcopy(model).eval()
        keep = [m for m, o in zip(candidate.modules(), model.modules()) if o in classifier]
        pruner = tp.pruner.MetaPruner(candidate, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                      pruning_ratio=ratio, ignored_layers=keep)
        pruner.step()
        cost = pdenas.profile(candidate, input_size)
        found = Pruned(candidate, ratio, cost.conv_macs, cost.macs, cost.params)
        if best is None or abs(found.conv_macs - target) < abs(best.conv_macs - target):
            best = found
        if abs(found.conv_macs - target) <= tolerance * target:
            break
        if found.conv_macs > target:
            low = ratio
        else:
            high = ratio
    assert best is not None
    return best
