"""Memory-format changes whose gradients come back in the caller's memory format.

The Global layer (Kag & Saligrama, CVPR 2022, Sec. 3.2) runs its depthwise convolutions, BatchNorms
and the solver of Eq. 8 on a channels-last copy of an NCHW feature map. ``x.contiguous(memory_format)``
passes the incoming gradient through unchanged, so the backward of every op after the change would
mix an NCHW gradient with channels-last saved tensors (strided, about twice as slow), and the
gradient leaving the layer would be channels-last. :func:`relayout` converts the gradient too: each
side of the boundary sees one memory format in both directions.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["memory_format_of", "relayout"]


def relayout(x: Tensor, memory_format: torch.memory_format) -> Tensor:
    """``x.contiguous(memory_format=memory_format)`` whose gradient gets ``x``'s memory format back."""
    if x.is_contiguous(memory_format=memory_format):
        return x
    if not (torch.is_grad_enabled() and x.requires_grad):
        return x.contiguous(memory_format=memory_format)
    return _Relayout.apply(x, memory_format)


def memory_format_of(x: Tensor) -> torch.memory_format:
    """channels_last for a channels-last (and not also contiguous) 4-D tensor, else contiguous_format."""
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


class _Relayout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, memory_format: torch.memory_format) -> Tensor:  # type: ignore[override]
        ctx.back = memory_format_of(x)
        return x.contiguous(memory_format=memory_format)  # (B, C, H, W), new strides

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad.contiguous(memory_format=ctx.back), None
