"""Deterministic, stratified index selection: the train/validation split and the training subset.

Both depend only on the labels and the seed (never on the global RNG), so a seed names one split.
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor

__all__ = ["stratified_split", "stratified_subset"]


def stratified_split(y: Tensor, *, val_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Indices ``(train, val)`` of ``y`` (N,): ``val_fraction`` of each class to validation, disjoint.

    Each class with n images gives ``round(val_fraction * n)`` of them to validation, at least one when
    ``val_fraction > 0`` and at most ``n - 1`` (a class keeps one training image). Both index tensors
    are sorted (int64).
    """
    generator = torch.Generator().manual_seed(_derive(seed, "split"))
    train: list[Tensor] = []
    val: list[Tensor] = []
    for label in torch.unique(y).tolist():  # sorted
        members = torch.nonzero(y == label).flatten()  # (n,)
        n = members.numel()
        n_val = min(max(round(val_fraction * n), 1 if val_fraction > 0 else 0), n - 1)
        shuffled = members[torch.randperm(n, generator=generator)]  # (n,)
        val.append(shuffled[:n_val])
        train.append(shuffled[n_val:])
    empty = torch.empty(0, dtype=torch.int64)
    return torch.cat(train or [empty]).sort().values, torch.cat(val or [empty]).sort().values


def stratified_subset(y: Tensor, size: int, *, seed: int) -> Tensor:
    """Sorted indices of ``size`` elements of ``y`` (N,), each class represented in proportion.

    Every element gets the key ``(rank + 0.5) / n_class`` for a random rank within its class; the
    ``size`` smallest keys (ties broken at random) are taken, which allocates proportionally.
    """
    if size >= y.numel():
        return torch.arange(y.numel())
    generator = torch.Generator().manual_seed(_derive(seed, "subset"))
    keys = torch.empty(y.numel(), dtype=torch.float64)  # (N,)
    for label in torch.unique(y).tolist():
        members = torch.nonzero(y == label).flatten()  # (n,)
        n = members.numel()
        ranks = torch.randperm(n, generator=generator).to(torch.float64)  # (n,)
        keys[members] = (ranks + 0.5) / n
    order = torch.randperm(y.numel(), generator=generator)  # random tie-break
    order = order[torch.argsort(keys[order], stable=True)]
    return order[:size].sort().values


def _derive(seed: int, purpose: str) -> int:
    """A 63-bit seed for ``purpose`` derived from ``seed`` (independent streams for split and subset)."""
    digest = hashlib.sha256(f"pdenas.data:{purpose}:{int(seed)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)
