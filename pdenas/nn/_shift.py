"""Wrap-around shifts as views, for the Global layer's stencil (Kag & Saligrama, CVPR 2022, Eq. 8).

The scheme reads the neighbours ``S_H^± H`` and ``S_W^± H`` of every pixel with periodic
boundaries. ``torch.roll`` materialises each shifted copy; here a shifted operand is instead cut
into the (at most a few) contiguous segments along the shifted dimension where
``roll(x, s, dim)[dst] == x[src]``, and each segment is a ``narrow`` view. An update such as

    out += c * roll(x, s, dim)

then costs one fused ``addcmul_`` pass over ``out`` (split in two views) and no temporary.
"""

from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import Tensor

__all__ = [
    "RolledShifts", "SMALL_NUMEL", "SegmentShifts", "is_small", "diff_rolled", "fma_rolled_", "mul_rolled", "pair_rolled", "segments",
]

Field = Union[Tensor, float]

# Feature maps with at most this many values take the per-call-cheap path (:class:`RolledShifts`, one
# grouped convolution for the coefficient branches): below it, an operation's fixed cost outweighs a pass.
# Measured on a K = 1 layer in eval, one thread (CPU time, small / large path): batch 1 of (16, 32, 32),
# (32, 16, 16), (64, 8, 8): 0.96, 0.86, 0.85; batch 2: 1.14, 1.10, 1.07 (the large path wins from there).
SMALL_NUMEL = 1 << 14


def is_small(x: Tensor) -> bool:
    """Whether ``x`` is a small feature map (see :data:`SMALL_NUMEL`)."""
    return x.numel() <= SMALL_NUMEL


def segments(n: int, shifts: Sequence[int]) -> list[tuple[int, int, tuple[int, ...]]]:
    """Cut ``range(n)`` so that every ``roll(x, s)`` (s in ``shifts``) is contiguous on each piece.

    Returns ``(dst_start, length, src_starts)`` triples: on ``[dst_start, dst_start + length)``,
    ``roll(x, shifts[i])`` equals ``x[src_starts[i] : src_starts[i] + length]``.
    """
    cuts = sorted({0, n, *(s % n for s in shifts)})
    pieces = []
    for start, stop in zip(cuts[:-1], cuts[1:]):
        pieces.append((start, stop - start, tuple((start - s) % n for s in shifts)))
    return pieces


def fma_rolled_(
    out: Tensor, coef: Field, x: Tensor, shift: int, dim: int, *, roll_coef: bool = False, alpha: float = 1.0
) -> Tensor:
    """``out += alpha * coef * roll(x, shift, dim)`` in place (``coef`` rolled too when ``roll_coef``).

    ``coef`` is a tensor of ``out``'s shape or a Python float.
    """
    if isinstance(coef, Tensor):
        for start, length, (src,) in segments(out.shape[dim], (shift,)):
            c = coef.narrow(dim, src if roll_coef else start, length)
            out.narrow(dim, start, length).addcmul_(c, x.narrow(dim, src, length), value=alpha)
    elif coef != 0.0:
        for start, length, (src,) in segments(out.shape[dim], (shift,)):
            out.narrow(dim, start, length).add_(x.narrow(dim, src, length), alpha=alpha * coef)
    return out


def mul_rolled(a: Tensor, x: Tensor, shift: int, dim: int) -> Tensor:
    """``a * roll(x, shift, dim)`` into a new tensor laid out like ``a``."""
    out = torch.empty_like(a)
    for start, length, (src,) in segments(a.shape[dim], (shift,)):
        torch.mul(a.narrow(dim, start, length), x.narrow(dim, src, length), out=out.narrow(dim, start, length))
    return out


def diff_rolled(x: Tensor, shift: int, dim: int, *, scale: float = 1.0, out: Tensor | None = None) -> Tensor:
    """``scale * (roll(x, shift, dim) - roll(x, -shift, dim))``, written into (or added to) ``out``."""
    if out is None:
        out = pair_rolled(x, shift, dim, sign=-1.0, out=torch.empty_like(x))
        return out.mul_(scale) if scale != 1.0 else out
    for start, length, (src_p, src_m) in segments(x.shape[dim], (shift, -shift)):
        dst = out.narrow(dim, start, length)
        dst.add_(x.narrow(dim, src_p, length), alpha=scale).sub_(x.narrow(dim, src_m, length), alpha=scale)
    return out


def pair_rolled(x: Tensor, shift: int, dim: int, *, sign: float, out: Tensor) -> Tensor:
    """``roll(x, shift, dim) + sign * roll(x, -shift, dim)`` written into ``out`` (sign is +1 or -1)."""
    op = torch.add if sign > 0 else torch.sub
    for start, length, (src_p, src_m) in segments(x.shape[dim], (shift, -shift)):
        op(x.narrow(dim, src_p, length), x.narrow(dim, src_m, length), out=out.narrow(dim, start, length))
    return out


class SegmentShifts:
    """Shifted operands as per-segment views (:func:`segments`): no copy, a few views per use."""

    def pair(self, x: Tensor, shift: int, dim: int, *, sign: float, out: Tensor) -> Tensor:
        return pair_rolled(x, shift, dim, sign=sign, out=out)

    def fma_(self, out: Tensor, coef: Field, x: Tensor, shift: int, dim: int) -> Tensor:
        return fma_rolled_(out, coef, x, shift, dim)


class RolledShifts:
    """Shifted operands as ``torch.roll`` copies: one operation per neighbour, whatever the shift.

    On small feature maps (batch 1), where an operation's fixed cost outweighs a pass over the data,
    this is cheaper than :class:`SegmentShifts`' views (two to four per neighbour): 94-131 against
    150-178 us for one K = 1 step on (1, 64, 8, 8) and (1, 16, 32, 32), one thread. A circularly
    padded copy with views (``F.pad(mode="circular")`` is itself a chain of slices) took 121-144 us.
    """

    def pair(self, x: Tensor, shift: int, dim: int, *, sign: float, out: Tensor) -> Tensor:
        op = torch.add if sign > 0 else torch.sub
        return op(torch.roll(x, shift, dim), torch.roll(x, -shift, dim), out=out)

    def fma_(self, out: Tensor, coef: Field, x: Tensor, shift: int, dim: int) -> Tensor:
        if isinstance(coef, Tensor):
            return out.addcmul_(coef, torch.roll(x, shift, dim))
        if coef != 0.0:
            out.add_(torch.roll(x, shift, dim), alpha=coef)
        return out
