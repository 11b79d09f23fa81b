"""The Global layer (Kag & Saligrama, CVPR 2022, Sec. 3.2, Fig. 2).

Given the input feature map f, the layer computes ``h = init_block(f)``, predicts the PDE's
coefficient fields from h with depthwise 3x3 convolutions,

    u   = ReLU(BN(dwconv(h)))          v   = ReLU(BN(dwconv(h)))          (advection, Eq. 7)
    D_x = ReLU(BN(dwconv(h)))          D_y = ReLU(BN(dwconv(h)))          (diffusion, Eq. 7)

runs K explicit steps of the advection-diffusion scheme (:func:`pdenas.nn.functional.global_pde`)
and returns ``ReLU(BN(H_K))`` (plus f when residual). The coefficient BatchNorms use
``eps = channels`` by default, as the paper's public code does (``BatchNorm2d(C, C)``): the large
eps keeps the coefficients small and the explicit scheme stable.

Execution (same numbers on every path, to float32 rounding; :meth:`GlobalLayer._form` chooses):

* ``"fused"``, eager (the default): the depthwise convolutions and the solver run on a channels-last
  copy of the feature map (oneDNN's depthwise kernels are about 2.4x faster there, and the scheme's
  shifted views along W stay contiguous), the output and its gradient are returned in the input's
  memory format (:mod:`pdenas.nn._layout`); in eval mode without autograd each coefficient BN is
  folded into its convolution and the output BN into one multiply-add, with the folded constants
  cached on the layer (:mod:`pdenas.nn._bn_fold`); the solver is the fused one with the adjoint
  backward (:mod:`pdenas.nn._fast_pde`). A TorchScript trace in eval mode records this form;
* ``"compiled"`` (opt-in, ``pdenas.nn.set_compile``, :mod:`pdenas.nn._compile`): in eval mode this
  whole forward under ``torch.compile``; in training the eager forward with the solver's forward
  and backward compiled;
* ``"conv"``: ONNX export in eval mode records the short inference form of :mod:`pdenas.nn._inference`
  (periodic stencils as depthwise convolutions);
* ``"compact"``: the fewest operations, for batch 1 (:mod:`pdenas.nn._compact`; ``pdenas.export.export_onnx``
  writes it for small batches);
* ``"plain"``: the modules and plain tensor operations exactly as written in the paper's code, so
  every elementwise MAC of the solver is counted (:mod:`pdenas.cost`) and ``torch.export`` /
  AOTInductor sees standard ops it can fuse; also any traced or exported training-mode layer.

:func:`pdenas.nn.use_form` overrides the form of eval-mode calls in a block of code (:mod:`pdenas.nn._forms`).

Under bfloat16 autocast (``pdenas.train``'s ``precision="bf16"``) the branches' convolutions run in
bfloat16 and the solver in the dtype of the layer's input, on its fused path. Running the solver in
float32 instead was measured (training step of a (32, 16, 32, 32) layer, one thread): 20-30 % slower,
for a worst parameter-gradient error against float32 of 5.7 instead of 6.1 % (K = 1) and 8.7 instead
of 9.0 % (K = 5); the error comes from the bfloat16 convolutions and BatchNorms, and the fused solver is
as close to float32 as autograd through the plain operations under the same autocast (tests/nn/test_autocast.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import functional as PF
from ._bn_fold import bn_affine, fold_conv_bn, frozen
from ._compile import CompiledOrEager, compile_enabled
from ._config import GlobalLayerConfig
from ._forms import requested_form
from ._compact import compact_form
from ._inference import can_fold, inference_form
from ._layout import memory_format_of, relayout
from ._shift import is_small

__all__ = ["GlobalLayer", "GlobalLayerUnstableError"]


class GlobalLayerUnstableError(FloatingPointError):
    """The explicit solver produced non-finite values (dt too large for the coefficients)."""


class _CoefficientField(nn.Sequential):
    """ReLU(BN(dwconv3x3(h))): one non-negative coefficient field per channel."""

    def __init__(self, channels: int, eps: float) -> None:
        super().__init__(
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
            nn.BatchNorm2d(channels, eps=eps),
            nn.ReLU(inplace=True),
        )


class GlobalLayer(nn.Module):
    """A Global layer at ``channels`` channels.

    Args:
        channels: C of the (B, C, H, W) input; the output has the same shape.
        config: the solver and layer settings.
        init_block: computes h from f; identity by default (the paper's ResNets), an original
            block in the paper's WRN and MobileNet variants. It must preserve the shape.
        name: how errors refer to this layer (set by :func:`pdenas.compress` to the stage name).
    """

    def __init__(
        self,
        channels: int,
        config: GlobalLayerConfig | None = None,
        *,
        init_block: nn.Module | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.config = config if config is not None else GlobalLayerConfig()
        self.name = name
        eps = self.config.norm_eps(channels)
        self.init_block = init_block if init_block is not None else nn.Identity()
        self.u = _CoefficientField(channels, eps) if self.config.advection else None
        self.v = _CoefficientField(channels, eps) if self.config.advection else None
        learned = self.config.diffusion == "learned"
        self.diff_x = _CoefficientField(channels, eps) if learned else None
        self.diff_y = _CoefficientField(channels, eps) if learned else None
        self.bn_out = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, f: Tensor) -> Tensor:  # f: (B, C, H, W)
        form = self._form(f)
        if form == "plain":
            return self._forward_plain(f)
        if form in ("conv", "compact"):
            size = (int(f.shape[-2]), int(f.shape[-1]))
            compact = compact_form(self, size) if form == "compact" else None
            return compact(f) if compact is not None else inference_form(self, size)(f)
        check = self.training
        folded = _folded(self)  # the eval-mode constants, built and cached here, outside any compiled graph
        if form == "compiled":
            # inference: the whole layer in one compiled graph (convs with folded BNs, fused solver, BN, ReLU)
            out, finite = _compiled_forward(self, f, check, folded)
        else:
            # eager convs and BNs; in training the solver's forward and backward run compiled when enabled
            out, finite = _forward_fused(self, f, check, folded)
        if finite is not None and not bool(finite):
            self._raise_unstable()
        return out

    def _form(self, f: Tensor) -> str:
        """How this call runs: "plain", "fused", "compiled", "conv" or "compact" (see the module docstring)."""
        onnx = torch.onnx.is_in_onnx_export()
        capturing = torch.compiler.is_exporting() or torch.compiler.is_compiling()
        tracing = torch.jit.is_tracing()
        if self.training:
            # a custom autograd Function cannot be traced or exported: plain differentiable operations
            return "plain" if (onnx or capturing or tracing) else "fused"
        if capturing and not onnx:
            return "plain"  # torch.export (AOTInductor) and torch.compile fuse the plain operations
        form = requested_form() or ("conv" if onnx else "fused")
        if form in ("conv", "compact") and not can_fold(self):
            return "plain"  # BatchNorms without running statistics normalise per batch
        if form == "fused" and tracing and torch.is_grad_enabled():
            return "plain"  # with autograd the fused solver is a custom Function a trace cannot record
        if form == "fused" and not (onnx or tracing) and compile_enabled(f.device):
            return "compiled"
        return form

    def _forward_plain(self, f: Tensor) -> Tensor:
        """The layer as the paper's code writes it: modules, then the solver as plain tensor ops."""
        cfg = self.config
        h = self.init_block(f)  # (B, C, H, W)
        u = self.u(h) if self.u is not None else 0.0
        v = self.v(h) if self.v is not None else 0.0
        Dx = self.diff_x(h) if self.diff_x is not None else cfg.cdx
        Dy = self.diff_y(h) if self.diff_y is not None else cfg.cdy
        H = PF.global_pde_unfused(
            f, h, u, v, Dx, Dy,
            iterations=cfg.iterations, dt=cfg.dt, dx=cfg.dx, dy=cfg.dy, forcing=cfg.forcing,
        )  # (B, C, H, W)
        out = self.relu(self.bn_out(H))
        return out + f if cfg.residual else out

    def batchnorms(self) -> list[nn.BatchNorm2d]:
        """The coefficient branches' BatchNorms and the output BatchNorm (not the init block's)."""
        return [b[1] for b in self._branches()] + [self.bn_out]

    def constant_sources(self) -> list[Tensor]:
        """The tensors the eval-mode constants derive from: the branches' conv weights, every BatchNorm's
        affine parameters and running statistics (the init block runs as a module and is not folded)."""
        tensors = [b[0].weight for b in self._branches()] + [b[0].bias for b in self._branches() if b[0].bias is not None]
        for bn in self.batchnorms():
            tensors += [t for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var) if t is not None]
        return tensors

    def _branches(self) -> list[nn.Module]:
        return [b for b in (self.u, self.v, self.diff_x, self.diff_y) if b is not None]

    def _raise_unstable(self) -> None:
        where = self.name or f"GlobalLayer(channels={self.channels})"
        cfg = self.config
        raise GlobalLayerUnstableError(
            f"Global layer {where} diverged (non-finite values) with iterations={cfg.iterations}, "
            f"dt={cfg.dt}, diffusion={cfg.diffusion}, coef_norm_eps={cfg.coef_norm_eps}: "
            "lower dt or iterations"
        )

    def extra_repr(self) -> str:
        cfg = self.config
        return (
            f"channels={self.channels}, iterations={cfg.iterations}, dt={cfg.dt}, "
            f"diffusion={cfg.diffusion}, advection={cfg.advection}, residual={cfg.residual}"
        )


def _forward_fused(
    layer: GlobalLayer, f: Tensor, check: bool, folded: dict[str, tuple[Tensor, Tensor]] | None
) -> tuple[Tensor, Tensor | None]:
    """The layer's output and, when ``check``, whether the solver's output is finite (a 0-dim bool tensor).

    ``folded``: :func:`_folded`'s constants (None in training, with autograd, or without running statistics).
    """
    cfg = layer.config
    # small maps (batch 1): NCHW, one grouped convolution for the branches and torch.roll for the shifts,
    # so that the number of operations stays small; large maps: channels-last (oneDNN's depthwise kernels)
    small = folded is not None and is_small(f)
    layout = torch.contiguous_format if small else torch.channels_last
    h = layer.init_block(f)  # (B, C, H, W)
    moved = not f.is_contiguous(memory_format=layout)
    if moved:
        f_in = relayout(f, layout)
        h = f_in if h is f else relayout(h, layout)
    else:
        f_in = f
    if small and "grouped" in folded:
        fields = _grouped_coefficients(layer, h, folded)
    else:
        fields = {name: _coefficient(getattr(layer, name), h, folded, name) for name in _BRANCHES if getattr(layer, name) is not None}
    # under autocast the branches' convolutions may return another dtype than f (bfloat16 after a float32
    # op): the solver runs in f's dtype, on its fused path
    fields = {name: x if x.dtype == f_in.dtype else x.to(f_in.dtype) for name, x in fields.items()}
    h = h if h.dtype == f_in.dtype else h.to(f_in.dtype)
    u, v = fields.get("u", 0.0), fields.get("v", 0.0)
    Dx, Dy = fields.get("diff_x", cfg.cdx), fields.get("diff_y", cfg.cdy)
    H = PF.global_pde(
        f_in, h, u, v, Dx, Dy,
        iterations=cfg.iterations, dt=cfg.dt, dx=cfg.dx, dy=cfg.dy, forcing=cfg.forcing,
    )  # (B, C, H, W)
    # one read pass: the sum is non-finite iff some value is (or |H| ~ 1e38 / numel: diverged anyway)
    finite = torch.isfinite(H.sum()) if check else None
    if folded is not None:
        scale, shift = folded["bn_out"]  # (1, C, 1, 1) each
        out = torch.relu_(torch.addcmul(shift, H, scale))
    else:
        out = layer.relu(layer.bn_out(H))
    if moved:
        out = relayout(out, memory_format_of(f))  # back to the caller's layout
    return (out + f if cfg.residual else out), finite


_compiled_forward = CompiledOrEager(_forward_fused, name="GlobalLayer.forward")


_BRANCHES = ("u", "v", "diff_x", "diff_y")


def _folded(layer: GlobalLayer) -> dict[str, tuple[Tensor, Tensor]] | None:
    """The eval-mode constants: each branch's conv with its BN folded in, the branches as one grouped
    convolution ("grouped": C -> nC channels, channel c n + k the k-th branch), the output BN as (scale, shift).

    None when they do not apply: in training, when autograd records (the cached constants carry no
    graph), or when a BatchNorm has no running statistics.
    """
    if layer.training or torch.is_grad_enabled() or not can_fold(layer):
        return None

    def build() -> dict[str, tuple[Tensor, Tensor]]:
        folded = {}
        for name in _BRANCHES:
            branch = getattr(layer, name)
            if branch is not None:
                folded[name] = fold_conv_bn(branch[0], branch[1])
        present = [name for name in _BRANCHES if name in folded]
        if len(present) > 1:
            weight = torch.stack([folded[n][0] for n in present], 1).flatten(0, 1)  # (nC, 1, 3, 3)
            bias = torch.stack([folded[n][1] for n in present], 1).flatten()  # (nC,)
            folded["grouped"] = (weight, bias)
        scale, shift = bn_affine(layer.bn_out)
        folded["bn_out"] = (scale.reshape(1, -1, 1, 1), shift.reshape(1, -1, 1, 1))
        return folded

    return frozen(layer, "folded", None, build, layer.constant_sources())


def _coefficient(branch: nn.Module, h: Tensor, folded: dict[str, tuple[Tensor, Tensor]] | None, name: str) -> Tensor:
    """ReLU(BN(dwconv(h))) of one coefficient branch, as one convolution with BN folded when ``folded``."""
    if folded is None:
        return branch(h)
    conv = branch[0]
    weight, bias = folded[name]
    return torch.relu_(F.conv2d(h, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups))


def _grouped_coefficients(layer: GlobalLayer, h: Tensor, folded: dict[str, tuple[Tensor, Tensor]]) -> dict[str, Tensor]:
    """Every branch in one grouped convolution (one call instead of up to four); each field a strided view."""
    names = [name for name in _BRANCHES if name in folded]
    conv = getattr(layer, names[0])[0]
    weight, bias = folded["grouped"]
    out = torch.relu_(F.conv2d(h, weight, bias, conv.stride, conv.padding, conv.dilation, layer.channels))  # (B, nC, H, W)
    fields = out.unflatten(1, (layer.channels, len(names)))  # (B, C, n, H, W)
    return {name: fields[:, :, k] for k, name in enumerate(names)}


