"""Periodic (wrap-around) neighbour stencils as depthwise convolutions, for the inference form of the
Global layer (Kag & Saligrama, CVPR 2022, Sec. 3.2, Eq. 8).

The scheme combines each pixel with its neighbours ``S_H^± X`` and ``S_W^± X`` on a torus:
``(S_H^+ X)[i] = X[i - dx]`` and ``(S_H^- X)[i] = X[i + dx]``, indices modulo the height (``torch.roll``).
A per-channel linear combination

    Y = c X + a_H S_H^+ X + b_H S_H^- X + a_W S_W^+ X + b_W S_W^- X       (a, b, c: one number per channel)

is a depthwise 3x3 convolution with dilation (dx, dy) and zero padding everywhere but at the borders,
where the wrapped neighbour is missing. A second depthwise convolution with dilation (H - dx, W - dy)
reads exactly those: its tap at offset -(H - dx) sees ``X[i + dx - H]``, the wrapped ``S_H^- X``, only
for ``i >= H - dx``, and its tap at +(H - dx) sees the wrapped ``S_H^+ X`` only for ``i < dx``; it is zero
everywhere else. So a periodic stencil is two convolutions whose sum ONNX Runtime computes as one
pass plus an in-place accumulation (``NchwcConv`` with a sum input), with no ``Slice``/``Concat``
copies and no per-call cost that grows with the number of shifted views.

Shifts are taken modulo the axis length; a shift of 0 (a 1-pixel axis, or dx a multiple of H) makes
both neighbours the pixel itself, and a shift of exactly half the axis makes ``S^+ = S^-`` (no wrap
convolution needed).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PeriodicStencil", "StencilTaps"]


class StencilTaps(NamedTuple):
    """Per-channel weights of a stencil: the pixel, then S_H^+, S_H^-, S_W^+, S_W^-. Each a (C,) tensor
    (depthwise: output channel c reads input channel c), or a (O, I / groups) tensor for a grouped
    stencil (output channel o reads the I / groups input channels of its group)."""

    center: Tensor
    h_plus: Tensor
    h_minus: Tensor
    w_plus: Tensor
    w_minus: Tensor


class _Axis(NamedTuple):
    main_dilation: int  # dilation of the main convolution along this axis
    wrap_dilation: int  # 0: no wrap-around correction needed
    plus_in_main: bool  # the S^+ / S^- taps exist (shift != 0 modulo the length)


def _axis(length: int, shift: int) -> _Axis:
    s = shift % length
    if s == 0:
        return _Axis(1, 0, False)
    if 2 * s == length:  # S^+ = S^-: both taps at +-s see the same wrapped pixel
        return _Axis(s, 0, True)
    return _Axis(s, length - s, True)


class PeriodicStencil(nn.Module):
    """``Y = c X + a_H S_H^+ X + b_H S_H^- X + a_W S_W^+ X + b_W S_W^- X (+ bias)`` on (B, C, H, W) tensors
    of one spatial size, as one or two depthwise (or grouped) convolutions with constant weights (buffers).

    Args:
        taps: per-channel weights (:class:`StencilTaps`), (C,) each, or (O, I / groups) each for a
            grouped stencil from I input channels to O output channels.
        size: (H, W) of the inputs it will see (the wrap-around depends on it).
        shifts: (dx, dy), the scheme's grid spacing in pixels.
        bias: an (O,) tensor added to the output, or None.
        groups: the convolution's groups for 2-D taps (the output channels for 1-D taps: depthwise).
    """

    def __init__(
        self, taps: StencilTaps, size: tuple[int, int], shifts: tuple[int, int], *, bias: Tensor | None = None,
        groups: int | None = None,
    ) -> None:
        super().__init__()
        ax_h, ax_w = _axis(size[0], shifts[0]), _axis(size[1], shifts[1])
        center, hp, hm, wp, wm = (t.detach() for t in taps)
        if not ax_h.plus_in_main:  # S_H^± X = X
            center, hp, hm = center + hp + hm, torch.zeros_like(hp), torch.zeros_like(hm)
        elif not ax_h.wrap_dilation:  # half the height: S_H^+ X = S_H^- X, seen from either side
            hp = hm = hp + hm
        if not ax_w.plus_in_main:
            center, wp, wm = center + wp + wm, torch.zeros_like(wp), torch.zeros_like(wm)
        elif not ax_w.wrap_dilation:
            wp = wm = wp + wm
        zero = torch.zeros_like(center)
        # 3x3 kernels, (C, 1, 3, 3): row 0 / 2 = offset -d / +d along H (S_H^+ / S_H^-), columns along W
        main = _kernel(center, hp, hm, wp, wm, zero)
        self.main_dilation = (ax_h.main_dilation, ax_w.main_dilation)
        main, self.main_dilation = _trim(main, self.main_dilation, use_h=ax_h.plus_in_main, use_w=ax_w.plus_in_main)
        self.register_buffer("main_weight", main, persistent=False)
        self.register_buffer("bias", None if bias is None else bias.detach().clone(), persistent=False)
        self.wrap_dilation: tuple[int, int] | None = None
        if ax_h.wrap_dilation or ax_w.wrap_dilation:
            h_on, w_on = bool(ax_h.wrap_dilation), bool(ax_w.wrap_dilation)
            # the wrapped S^- neighbour sits at offset -(n - s), the wrapped S^+ at +(n - s)
            wrap = _kernel(zero, hm if h_on else zero, hp if h_on else zero, wm if w_on else zero, wp if w_on else zero, zero)
            dil = (ax_h.wrap_dilation or 1, ax_w.wrap_dilation or 1)
            wrap, self.wrap_dilation = _trim(wrap, dil, use_h=h_on, use_w=w_on)
            self.register_buffer("wrap_weight", wrap, persistent=False)
        else:
            self.register_buffer("wrap_weight", None, persistent=False)
        self.channels = center.shape[0]
        self.groups = center.shape[0] if center.dim() == 1 else int(groups or 1)

    def forward(self, x: Tensor, acc: Tensor | None = None) -> Tensor:  # (B, C, H, W) -> (B, C, H, W)
        """The stencil of ``x``, plus ``acc`` when given (ONNX Runtime adds each convolution in place)."""
        y = _conv(x, self.main_weight, self.bias, self.main_dilation, self.groups)
        if acc is not None:
            y = acc + y
        if self.wrap_weight is not None:
            y = y + _conv(x, self.wrap_weight, None, self.wrap_dilation, self.groups)
        return y

    def extra_repr(self) -> str:
        return f"channels={self.channels}, groups={self.groups}, dilation={self.main_dilation}, wrap_dilation={self.wrap_dilation}"


def _kernel(center: Tensor, up: Tensor, down: Tensor, left: Tensor, right: Tensor, zero: Tensor) -> Tensor:
    """(C, 1, 3, 3) depthwise kernel (taps (C,)) or (O, I / groups, 3, 3) grouped kernel (taps (O, I / groups))
    with the given taps at (-1, 0), (+1, 0), (0, -1), (0, +1) and the centre."""
    rows = [
        torch.stack([zero, up, zero], dim=-1),
        torch.stack([left, center, right], dim=-1),
        torch.stack([zero, down, zero], dim=-1),
    ]
    kernel = torch.stack(rows, dim=-2)  # (..., 3, 3)
    return kernel.unsqueeze(1) if center.dim() == 1 else kernel


def _trim(kernel: Tensor, dilation: tuple[int, int], *, use_h: bool, use_w: bool) -> tuple[Tensor, tuple[int, int]]:
    """Drop the kernel rows/columns of an axis without taps: 3x1, 1x3 or 1x1 kernels are cheaper."""
    if not use_h:
        kernel, dilation = kernel[:, :, 1:2, :], (1, dilation[1])
    if not use_w:
        kernel, dilation = kernel[:, :, :, 1:2], (dilation[0], 1)
    return kernel.contiguous(), dilation


def _conv(x: Tensor, weight: Tensor, bias: Tensor | None, dilation: tuple[int, int], groups: int) -> Tensor:
    kh, kw = weight.shape[-2:]
    padding = (dilation[0] * (kh // 2), dilation[1] * (kw // 2))
    return F.conv2d(x, weight, bias, padding=padding, dilation=dilation, groups=groups)
