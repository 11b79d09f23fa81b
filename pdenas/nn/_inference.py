"""The Global layer's short inference form (Kag & Saligrama, CVPR 2022, Sec. 3.2, Eq. 6-8): what eager
eval, TorchScript and ONNX export run.

Everything that does not depend on the input is computed once, when the form is built from an
eval-mode layer: the coefficient BatchNorms folded into their depthwise convolutions (with
``torch.nn.utils.fusion.fuse_conv_bn_weights``), the scheme's constants ``2 dt / dx^2`` and
``dt / dx`` folded into those weights (ReLU commutes with a positive scale), and the periodic
neighbour differences as depthwise convolutions (:mod:`pdenas.nn._stencil`). With
``gDx = 2 dt / dx^2 D_x``, ``au = dt / dx u`` (and ``gDy``, ``av`` along W), ``L_H = S_H^+ + S_H^-``,
``G_H = S_H^- - S_H^+``, ``E' = G_H au + G_W av`` (``= -2E``) and ``den = 1 + gDx + gDy``, one step of
the scheme of :mod:`pdenas.nn.functional` reads

    H_{k+1} = (2 - den)/den H_{k-1} + [E' H_k + gDx L_H H_k + au G_H H_k + gDy L_W H_k + av G_W H_k + 2 dt f] / den

K = 1 with a learned diffusion (the paper's layer) is written as one quotient,
``H_1 = M / den - f`` with ``M = (2 + 2 dt) f + E' h + gDx L_H h + ...``, and when ``h`` is ``f`` (no
init block) the ``- f den`` is folded into the stencils' centres: ``H_1 = M' / den`` with no extra pass.
Each of the 5 products is one multiplication of two tensors; per layer that is 4 field convolutions,
4 periodic stencils of h and 2 of u, v (each a convolution plus a wrap-around convolution that ONNX
Runtime accumulates in place), 1 convolution for ``den``, 5 multiplications, 4 additions, 1 division
and the output ``ReLU(BN(.))`` as one 1x1 depthwise convolution: about 30 operations, each one pass
over the (B, C, H, W) feature map, none wider than C channels. Every operation but the division is
one that ONNX Runtime keeps in its blocked NCHWc layout (convolutions, same-shape Mul/Add, ReLU), so
no reorder passes are inserted between them.

Otherwise (K > 1, or a constant diffusion) the step's coefficient fields ``c = D n`` with
``D = 1 / den`` are computed once, and each iteration is 4 stencils, one product per tensor-valued
field and their sum; fields that are constants (constant diffusion, no advection) are not
multiplied at all but folded into a stencil's weights.

The form depends on the feature map's spatial size (the wrap-around convolutions' dilation is the
size minus the shift), so a form is built per (H, W); :func:`inference_form` caches it on the layer
and rebuilds it when a parameter or statistic of the layer changes.
"""

from __future__ import annotations

from typing import Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._bn_fold import bn_affine, fold_conv_bn, frozen
from ._stencil import PeriodicStencil, StencilTaps

__all__ = ["GlobalLayerInference", "can_fold", "inference_form"]

Field = Union[Tensor, float]


class _Field(nn.Module):
    """``scale * ReLU(BN(dwconv(h)))`` of a coefficient branch as one depthwise convolution and a ReLU."""

    def __init__(self, branch: nn.Sequential, scale: float) -> None:
        super().__init__()
        conv, bn = branch[0], branch[1]
        folded = fold_conv_bn(conv, bn)
        if folded is None:
            raise ValueError("a coefficient BatchNorm without running statistics cannot be folded")
        weight, bias = folded
        # scale > 0, so scale * ReLU(z) = ReLU(scale * z)
        self.register_buffer("weight", (weight * scale).detach(), persistent=False)  # (C, 1, 3, 3)
        self.register_buffer("bias", (bias * scale).detach(), persistent=False)  # (C,)
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups

    def forward(self, h: Tensor) -> Tensor:  # (B, C, H, W)
        return torch.relu(F.conv2d(h, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups))


def can_fold(layer: nn.Module) -> bool:
    """Whether every BatchNorm of a Global layer (not of its init block) keeps running statistics, so that
    eval mode can fold it."""
    return all(bn.running_mean is not None and bn.running_var is not None for bn in layer.batchnorms())


class GlobalLayerInference(nn.Module):
    """The eval-mode function of a :class:`~pdenas.nn.GlobalLayer` at one spatial size, with its constants
    folded (see the module docstring). Same outputs as the layer in eval mode, to float32 rounding.

    Args:
        layer: an eval-mode GlobalLayer whose BatchNorms have running statistics (:func:`can_fold`).
        size: (H, W) of the feature maps it will run on.
    """

    def __init__(self, layer: nn.Module, size: tuple[int, int]) -> None:
        super().__init__()
        cfg = layer.config
        self.size = tuple(size)
        self.init_block = layer.init_block
        self.alias = isinstance(layer.init_block, nn.Identity)  # h is f
        self.residual = cfg.residual
        self.iterations = cfg.iterations
        dt, dx, dy = float(cfg.dt), int(cfg.dx), int(cfg.dy)
        self.shifts = (dx, dy)
        gam_h, gam_w, al_h, al_w = 2 * dt / dx**2, 2 * dt / dy**2, dt / dx, dt / dy
        ref = layer.bn_out.running_var
        ones = torch.ones(layer.channels, dtype=ref.dtype, device=ref.device)  # (C,): per-channel constants

        def field(branch: nn.Module | None, scale: float, constant: float) -> nn.Module | float:
            return _Field(branch, scale) if branch is not None else constant * scale

        self.gDx = field(layer.diff_x, gam_h, cfg.cdx if cfg.diffusion == "constant" else 0.0)
        self.au = field(layer.u, al_h, 0.0)
        self.gDy = field(layer.diff_y, gam_w, cfg.cdy if cfg.diffusion == "constant" else 0.0)
        self.av = field(layer.v, al_w, 0.0)
        affine = bn_affine(layer.bn_out)
        if affine is None:
            raise ValueError("an output BatchNorm without running statistics cannot be folded")
        self.out = _Affine(*affine)  # BN(H) = scale H + shift, then ReLU
        self.learned_den = isinstance(self.gDx, nn.Module) or isinstance(self.gDy, nn.Module)
        self.advection = isinstance(self.au, nn.Module)
        self.quotient = self.iterations == 1 and self.learned_den
        if self.quotient:
            self._build_quotient(ones, dt, cfg.forcing)
        else:
            self._build_iterations(ones, dt, cfg.forcing)

    # ---------------------------------------------------------------------------------------- K = 1

    def _build_quotient(self, one: Tensor, dt: float, forcing: bool) -> None:
        """``H_1 = M / den - f`` (see the module docstring); ``- f den`` folded into M when h is f.

        Here both diffusion fields are learned tensors, so den = 1 + gDx + gDy is one too.
        """
        zero = one * 0.0
        fold = -1.0 if self.alias else 0.0  # M - f den = (f's factor - 1) f + gDx (L_H - 1) f + gDy (L_W - 1) f + ...
        f_coef = 2.0 + (2.0 * dt if forcing else 0.0) + fold  # the factor of f left in M
        stencils = {
            "x": StencilTaps(one * fold, one, one, zero, zero),  # gDx (L_H + fold) h
            "y": StencilTaps(one * fold, zero, zero, one, one),  # gDy (L_W + fold) h
        }
        if self.advection:
            stencils["u"] = StencilTaps(zero, -one, one, zero, zero)  # au G_H h
            stencils["v"] = StencilTaps(zero, zero, zero, -one, one)  # av G_W h
        self.products = nn.ModuleDict({n: PeriodicStencil(t, self.size, self.shifts) for n, t in stencils.items()})
        # f's own factor: the bias of E' = G_H au + G_W av when E' multiplies f, else a 1x1 convolution of f
        self.e_stencils = _e_stencils(one, self.size, self.shifts, one * f_coef if self.alias else None) if self.advection else None
        self.f_term = None if (self.advection and self.alias) else _Affine(one * f_coef, None)
        self.den = _Den(one)  # den = 1 + gDx + gDy
        # output: ReLU(BN(H_1)); when h is not f, H_1 = q - f and BN(q - f) = scale q + shift - scale f
        self.out_f = None if self.alias else _Affine(-self.out.scale, None)

    def _forward_quotient(self, f: Tensor, h: Tensor, fields: dict[str, Tensor]) -> Tensor:
        M: Tensor | None = None
        for name, stencil in self.products.items():
            M = _add(M, fields[name] * stencil(h))  # (B, C, H, W)
        if self.e_stencils is not None:
            e = self.e_stencils[1](fields["v"], self.e_stencils[0](fields["u"]))  # E' (+ f's factor)
            M = _add(M, e * h)
        if self.f_term is not None:
            M = _add(M, self.f_term(f))
        q = M / self.den(fields)  # H_1 (h is f), or H_1 + f
        out = self.out(q)
        if self.out_f is not None:
            out = out + self.out_f(f)
        return torch.relu(out)

    # ---------------------------------------------------------------------------------------- any K

    def _build_iterations(self, one: Tensor, dt: float, forcing: bool) -> None:
        """Coefficient fields ``c = D n`` once per call, then K steps (see the module docstring).

        The diffusion is either learned (both fields) or constant (both), so D is a tensor exactly when
        ``gDx`` and ``gDy`` are.
        """
        zero = one * 0.0
        const_den = 1.0 + sum(float(c) for c in (self.gDx, self.gDy) if not isinstance(c, nn.Module))
        D = None if self.learned_den else 1.0 / const_den  # a number when the diffusion is constant
        self.const_D = D
        specs = {
            "x": (self.gDx, StencilTaps(zero, one, one, zero, zero)),  # n L_H
            "y": (self.gDy, StencilTaps(zero, zero, zero, one, one)),  # n L_W
            "u": (self.au, StencilTaps(zero, -one, one, zero, zero)),  # n G_H
            "v": (self.av, StencilTaps(zero, zero, zero, -one, one)),  # n G_W
        }
        products: dict[str, PeriodicStencil] = {}
        constants: list[StencilTaps] = []
        for name, (n, taps) in specs.items():
            if isinstance(n, nn.Module):  # c = D n: a product with the field, D folded when it is a number
                products[name] = PeriodicStencil(_times(taps, 1.0 if D is None else D), self.size, self.shifts)
            elif n != 0.0:  # c = D n, a number (constant diffusion): folded into one linear stencil
                constants.append(_times(taps, n * D))
        self.it_products = nn.ModuleDict(products)
        self.it_linear = _stencil_or_none(_sum_taps(constants, zero), self.size, self.shifts)
        self.e_stencils = _e_stencils(one, self.size, self.shifts, None, 1.0 if D is None else D) if self.advection else None
        self.den = _Den(one * const_den) if D is None else None
        f2dt = 2.0 * dt if forcing else 0.0
        if D is None:
            self.d_copy = _Affine(one, None)  # D through a 1x1 convolution: ONNX Runtime's blocked layout
            self.a_of_D = _Affine(one * 2.0, one * -1.0)  # a = 2D - 1
            self.a0_of_D = _Affine(one * (2.0 + f2dt), one * -1.0)  # a + 2 dt D: the first step's factor of f
            self.s_of_D = _Affine(one * f2dt, None) if forcing else None
        else:
            self.a_fixed = _Affine(one * (2.0 * D - 1.0), None)
            self.a0_fixed = _Affine(one * ((2.0 + f2dt) * D - 1.0), None)
            self.s_fixed = _Affine(one * (f2dt * D), None) if forcing else None

    def _forward_iterations(self, f: Tensor, h: Tensor, fields: dict[str, Tensor]) -> Tensor:
        # the step's fields, once: a H_{k-1} (a0 f in the first step, the source included), b = D E', c_j = D n_j
        if self.const_D is None:
            D = self.d_copy(torch.reciprocal(self.den(fields)))  # (B, C, H, W)
            a_prev = self.a_of_D(D)
            first = self.a0_of_D(D) * f
            s = D * self.s_of_D(f) if self.s_of_D is not None else None
            coef = {n: D * fields[n] for n in self.it_products}
        else:
            a_prev = None
            first = self.a0_fixed(f)
            s = self.s_fixed(f) if self.s_fixed is not None else None
            coef = {n: fields[n] for n in self.it_products}
        b = None
        if self.e_stencils is not None:
            b = self.e_stencils[1](fields["v"], self.e_stencils[0](fields["u"]))  # D E'
            if self.const_D is None:
                b = D * b
        H_prev, H = f, h
        for k in range(self.iterations):
            if k == 0:
                H_new = first
            else:
                H_new = a_prev * H_prev if a_prev is not None else self.a_fixed(H_prev)
                if s is not None:
                    H_new = H_new + s
            if b is not None:
                H_new = H_new + b * H
            for name, stencil in self.it_products.items():
                H_new = H_new + coef[name] * stencil(H)
            if self.it_linear is not None:
                H_new = H_new + self.it_linear(H)
            H_prev, H = H, H_new
        return torch.relu(self.out(H))

    # -------------------------------------------------------------------------------------- forward

    def forward(self, f: Tensor) -> Tensor:  # f: (B, C, H, W)
        h = f if self.alias else self.init_block(f)  # (B, C, H, W)
        fields = {n: m(h) for n, m in (("x", self.gDx), ("u", self.au), ("y", self.gDy), ("v", self.av)) if isinstance(m, nn.Module)}
        out = self._forward_quotient(f, h, fields) if self.quotient else self._forward_iterations(f, h, fields)
        return out + f if self.residual else out


class _Affine(nn.Module):
    """``scale * x + shift`` per channel, as a 1x1 depthwise convolution (one pass, fused by ONNX Runtime)."""

    def __init__(self, scale: Tensor, shift: Tensor | None) -> None:
        super().__init__()
        self.register_buffer("weight", scale.detach().reshape(-1, 1, 1, 1).clone(), persistent=False)  # (C, 1, 1, 1)
        self.register_buffer("bias", None if shift is None else shift.detach().clone(), persistent=False)

    @property
    def scale(self) -> Tensor:
        return self.weight.reshape(-1)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight, self.bias, groups=self.weight.shape[0])


class _Den(_Affine):
    """``den = 1 + gDx + gDy`` from the learned fields: a 1x1 convolution of gDx with bias 1, plus gDy
    (ONNX Runtime adds it in place)."""

    def __init__(self, bias: Tensor) -> None:
        super().__init__(torch.ones_like(bias), bias)

    def forward(self, fields: dict[str, Tensor]) -> Tensor:  # type: ignore[override]
        return super().forward(fields["x"]) + fields["y"]  # (B, C, H, W)


def _add(total: Tensor | None, term: Tensor) -> Tensor:
    return term if total is None else total + term


def _times(taps: StencilTaps, factor: float) -> StencilTaps:
    return StencilTaps(*(t * factor for t in taps))


def _e_stencils(
    one: Tensor, size: tuple[int, int], shifts: tuple[int, int], bias: Tensor | None, factor: float = 1.0
) -> nn.ModuleList:
    """``factor E' (+ bias)`` with ``E' = G_H au + G_W av``: two stencils, of the u field and of the v field."""
    zero = one * 0.0
    return nn.ModuleList([
        PeriodicStencil(StencilTaps(zero, -one * factor, one * factor, zero, zero), size, shifts, bias=bias),
        PeriodicStencil(StencilTaps(zero, zero, zero, -one * factor, one * factor), size, shifts),
    ])


def _sum_taps(taps: object, zero: Tensor) -> StencilTaps:
    total = StencilTaps(zero, zero, zero, zero, zero)
    for t in taps:  # type: ignore[attr-defined]
        total = StencilTaps(*(x + y for x, y in zip(total, t)))
    return total


def _stencil_or_none(taps: StencilTaps, size: tuple[int, int], shifts: tuple[int, int]) -> PeriodicStencil | None:
    if not any(bool((t != 0).any()) for t in taps):
        return None
    return PeriodicStencil(taps, size, shifts)


def inference_form(layer: nn.Module, size: tuple[int, int]) -> GlobalLayerInference:
    """The layer's :class:`GlobalLayerInference` for ``size``, cached on the layer while its parameters,
    statistics and settings are unchanged (:func:`pdenas.nn._bn_fold.frozen`); the init block runs as a module."""
    return frozen(
        layer, "inference_form", (tuple(size), layer.config), lambda: GlobalLayerInference(layer, tuple(size)),
        layer.constant_sources(),
    )
