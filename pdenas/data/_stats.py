"""Per-channel mean and standard deviation of uint8 images, exact (from 256-bin histograms)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["channel_stats"]


def channel_stats(x: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` per channel of ``x`` (N, C, H, W) uint8, in [0, 1] units (population std)."""
    if x.shape[0] == 0:
        raise ValueError("cannot compute channel statistics of zero images")
    levels = torch.arange(256, dtype=torch.float64) / 255.0  # (256,)
    means: list[float] = []
    stds: list[float] = []
    for channel in range(x.shape[1]):
        counts = torch.bincount(x[:, channel].reshape(-1), minlength=256).to(torch.float64)  # (256,)
        total = counts.sum()
        mean = float((counts * levels).sum() / total)
        var = float((counts * (levels - mean) ** 2).sum() / total)
        means.append(mean)
        stds.append(max(var, 0.0) ** 0.5)
    return tuple(means), tuple(stds)
