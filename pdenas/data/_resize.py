"""Resizing a stack of uint8 images (bilinear, antialiased when shrinking), in chunks to bound memory."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["resize_uint8"]

_CHUNK = 4096


def resize_uint8(x: Tensor, size: int) -> Tensor:
    """``x`` (N, C, H, W) uint8 resized to (N, C, size, size) uint8; returned as is when already that size."""
    if x.shape[-2:] == (size, size):
        return x
    out = torch.empty((x.shape[0], x.shape[1], size, size), dtype=torch.uint8)  # (N, C, size, size)
    for start in range(0, x.shape[0], _CHUNK):
        chunk = x[start : start + _CHUNK].float()  # (n, C, H, W)
        shrink = size < max(x.shape[-2:])
        chunk = F.interpolate(chunk, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
        out[start : start + _CHUNK] = chunk.round_().clamp_(0, 255).to(torch.uint8)
    return out
