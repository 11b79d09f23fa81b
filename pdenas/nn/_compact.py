"""The Global layer's compact inference form (Kag & Saligrama, CVPR 2022, Sec. 3.2, Eq. 6-8): the fewest
operations per layer, at the price of intermediates several times C channels wide.

The narrow form of :mod:`pdenas.nn._inference` takes about 31 operations per layer in ONNX Runtime, each C
channels wide; at batch 1 each also pays a fixed cost. Here every kind of work is one operation over all
the scheme's terms at once. With ``gDx = 2 dt / dx^2 D_x``, ``au = dt / dx u`` (and ``gDy``, ``av`` along W),
``L = S^+ + S^-`` and ``G = S^- - S^+`` as in :mod:`pdenas.nn._inference`, the advection terms of a step are
rewritten as products of unshifted fields with shifted copies of h, shifted afterwards (a periodic shift
of a product is the product of the shifts):

    au G_H h + (G_H au) h = (1 - S_H^+)(au S_H^- h) - (1 - S_H^-)(au S_H^+ h)

so the numerator of K = 1 with a learned diffusion (``H_1 = M / den``, see :mod:`pdenas.nn._inference`) is

    M = sum_k A_k(F_k * N_k(h))          den = 1 + gDx + gDy

over m terms per channel: the fields ``F = (gDx, gDy, au, au, av, av, 1)`` (the constant 1 carries f's own
factor), the stencils ``N = ((L_H - 1) h, (L_W - 1) h, S_H^- h, S_H^+ h, S_W^- h, S_W^+ h, c h)`` and the
post-shifts ``A = (1, 1, 1 - S_H^+, S_H^- - 1, 1 - S_W^+, S_W^- - 1, 1)``; m = 3 without advection. With the
terms stacked along channels (channel k C + c: term k of channel c) that is: h copied m times (one
``Concat``), the fields as one depthwise convolution with the BatchNorms and constants folded and its
ReLU, N and A each one periodic depthwise convolution (a convolution plus its wrap-around one,
:mod:`pdenas.nn._stencil`), one ``Mul``, the sum over terms and ``den`` as two 1x1 convolutions mC -> C,
one ``Div`` and the output ``ReLU(BN(.))`` as one 1x1 depthwise convolution: 15 ONNX operations before ONNX
Runtime fuses the ReLUs and sums (41 in the narrow form), 14 after it with its layout reorders (31).
Every convolution but the two sums is ONNX Runtime's blocked depthwise kind; a grouped convolution with
several channels per group (C -> mC) is not, and ran 3-7x slower than the whole narrow form.

Measured (benchmarks/RESULTS.md, issue 14), the compact form is the slower one in ONNX Runtime on the CPU
at batch 1 as at 64: its wide operations cost more work than the fixed cost of the operations it saves,
so :func:`pdenas.export.export_onnx` writes it only when asked (``form="compact"``). It applies to K = 1
with a learned diffusion (the paper's layer); other settings keep the narrow form (:func:`compact_form`
returns None for them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._bn_fold import bn_affine, fold_conv_bn, frozen
from ._stencil import PeriodicStencil, StencilTaps

__all__ = ["GlobalLayerCompact", "compact_applies", "compact_form"]


def compact_applies(layer: nn.Module) -> bool:
    """Whether a Global layer has a compact form: one iteration and a learned diffusion."""
    return layer.config.iterations == 1 and layer.diff_x is not None and layer.diff_y is not None


class GlobalLayerCompact(nn.Module):
    """The eval-mode function of a :class:`~pdenas.nn.GlobalLayer` with one iteration and a learned
    diffusion, at one spatial size, in the fewest operations (see the module docstring).

    Args:
        layer: an eval-mode GlobalLayer whose BatchNorms have running statistics, K = 1, learned diffusion.
        size: (H, W) of the feature maps it will run on.
    """

    def __init__(self, layer: nn.Module, size: tuple[int, int]) -> None:
        super().__init__()
        if not compact_applies(layer):
            raise ValueError("the compact form needs one iteration and a learned diffusion")
        cfg = layer.config
        self.size = tuple(size)
        self.init_block = layer.init_block
        self.alias = isinstance(layer.init_block, nn.Identity)  # h is f
        self.residual = cfg.residual
        dt, dx, dy = float(cfg.dt), int(cfg.dx), int(cfg.dy)
        C = layer.channels
        ref = layer.bn_out.running_var
        one = torch.ones(C, dtype=ref.dtype, device=ref.device)
        zero = one * 0.0
        fold = -1.0 if self.alias else 0.0  # H_1 = M / den - f; when h is f, - f den goes into the stencils
        f_coef = 2.0 + (2.0 * dt if cfg.forcing else 0.0) + fold
        # per term: (coefficient branch, its scale; N's taps; A's taps), in the order of the m channels per group
        terms: list[tuple[nn.Module | None, float, StencilTaps, StencilTaps]] = [
            (layer.diff_x, 2 * dt / dx**2, StencilTaps(one * fold, one, one, zero, zero), StencilTaps(one, zero, zero, zero, zero)),
            (layer.diff_y, 2 * dt / dy**2, StencilTaps(one * fold, zero, zero, one, one), StencilTaps(one, zero, zero, zero, zero)),
        ]
        if layer.u is not None:
            terms += [
                (layer.u, dt / dx, StencilTaps(zero, zero, one, zero, zero), StencilTaps(one, -one, zero, zero, zero)),  # (1 - S_H^+)(au S_H^- h)
                (layer.u, dt / dx, StencilTaps(zero, one, zero, zero, zero), StencilTaps(-one, zero, one, zero, zero)),  # -(1 - S_H^-)(au S_H^+ h)
                (layer.v, dt / dy, StencilTaps(zero, zero, zero, zero, one), StencilTaps(one, zero, zero, -one, zero)),
                (layer.v, dt / dy, StencilTaps(zero, zero, zero, one, zero), StencilTaps(-one, zero, zero, zero, one)),
            ]
        if self.alias:  # f's own factor: a constant field 1 times f_coef h
            terms.append((None, 1.0, StencilTaps(one * f_coef, zero, zero, zero, zero), StencilTaps(one, zero, zero, zero, zero)))
        m = len(terms)
        self.terms = m
        weights, biases = [], []
        for branch, scale, _, _ in terms:
            if branch is None:
                weights.append(torch.zeros(C, 1, 3, 3, dtype=ref.dtype, device=ref.device))
                biases.append(one)  # ReLU(0 h + 1) = 1
                continue
            folded = fold_conv_bn(branch[0], branch[1])
            if folded is None:
                raise ValueError("a coefficient BatchNorm without running statistics cannot be folded")
            w, b = folded  # (C, 1, 3, 3), (C,); scale > 0, so scale ReLU(z) = ReLU(scale z)
            weights.append(w * scale)
            biases.append(b * scale)
        conv = layer.diff_x[0]
        self.field_conv = (conv.stride, conv.padding, conv.dilation)
        # channel k C + c: term k of channel c, so that the m copies of h are one concatenation and every
        # convolution but the two sums is depthwise (ONNX Runtime's blocked NCHWc kernels)
        self.register_buffer("field_weight", torch.cat(weights, 0).detach(), persistent=False)  # (mC, 1, 3, 3)
        self.register_buffer("field_bias", torch.cat(biases, 0).detach(), persistent=False)  # (mC,)
        shifts = (dx, dy)
        self.neighbours = PeriodicStencil(StencilTaps(*(torch.cat([t[2][j] for t in terms]) for j in range(5))), self.size, shifts)
        self.post = PeriodicStencil(StencilTaps(*(torch.cat([t[3][j] for t in terms]) for j in range(5))), self.size, shifts)
        eye = torch.eye(C, dtype=ref.dtype, device=ref.device)
        # the sum over terms and den = 1 + gDx + gDy: 1x1 convolutions mC -> C
        self.register_buffer("sum_weight", eye.repeat(1, m).reshape(C, m * C, 1, 1), persistent=False)
        den = torch.cat([eye, eye, torch.zeros(C, (m - 2) * C, dtype=ref.dtype, device=ref.device)], 1)
        self.register_buffer("den_weight", den.reshape(C, m * C, 1, 1), persistent=False)
        self.register_buffer("den_bias", one.clone(), persistent=False)
        affine = bn_affine(layer.bn_out)
        if affine is None:
            raise ValueError("an output BatchNorm without running statistics cannot be folded")
        scale, shift = affine
        self.register_buffer("out_weight", scale.detach().reshape(-1, 1, 1, 1).clone(), persistent=False)
        self.register_buffer("out_bias", shift.detach().clone(), persistent=False)
        # h is not f: M gains f_coef f, and BN(q - f) = scale q + shift - scale f
        self.register_buffer("f_weight", None if self.alias else (one * f_coef).reshape(-1, 1, 1, 1), persistent=False)
        self.register_buffer("out_f_weight", None if self.alias else (-scale.detach()).reshape(-1, 1, 1, 1).clone(), persistent=False)
        self.channels = C

    def forward(self, f: Tensor) -> Tensor:  # f: (B, C, H, W)
        C = self.channels
        h = f if self.alias else self.init_block(f)  # (B, C, H, W)
        stride, padding, dilation = self.field_conv
        hm = torch.cat([h] * self.terms, 1)  # (B, mC, H, W)
        fields = torch.relu(F.conv2d(hm, self.field_weight, self.field_bias, stride, padding, dilation, self.terms * C))
        M = F.conv2d(self.post(fields * self.neighbours(hm)), self.sum_weight)  # (B, C, H, W)
        if self.f_weight is not None:
            M = M + F.conv2d(f, self.f_weight, groups=C)
        q = M / F.conv2d(fields, self.den_weight, self.den_bias)  # H_1 (h is f), or H_1 + f
        out = F.conv2d(q, self.out_weight, self.out_bias, groups=C)
        if self.out_f_weight is not None:
            out = out + F.conv2d(f, self.out_f_weight, groups=C)
        out = torch.relu(out)
        return out + f if self.residual else out


def compact_form(layer: nn.Module, size: tuple[int, int]) -> GlobalLayerCompact | None:
    """The layer's :class:`GlobalLayerCompact` for ``size`` (cached like :func:`pdenas.nn._inference.inference_form`),
    or None when the layer has no compact form (:func:`compact_applies`)."""
    if not compact_applies(layer):
        return None
    return frozen(
        layer, "compact_form", (tuple(size), layer.config), lambda: GlobalLayerCompact(layer, tuple(size)),
        layer.constant_sources(),
    )
