"""Function-preserving insertion of a Global layer into a trained network (``init="identity"``).

A Global layer put in place of trained blocks starts from random weights, so the network it joins
computes something else than before and the first epochs repair that damage. Inserting it as the
identity instead (Net2Net, Chen et al. 2016; zero-initialised residual branches, Goyal et al. 2017;
ReZero, Bachlechner et al. 2020) keeps the candidate exactly where the same plan without the layer is:

    y = f + a * G(f),        G(f) = ReLU(BN(H_K))  (the paper's layer, Kag & Saligrama, CVPR 2022, Fig. 2)

with one learned scalar ``a`` initialised to 0. At the start y = f, and

    dL/da = <dL/dy, G(f)>,

which is not zero, so ``a`` leaves 0 at the first step and the layer's own weights then receive
gradients ``a * ...``. Zero-initialising the output BN's gamma instead would make G(f) = ReLU(beta) = 0
and, through the ReLU, every gradient of the layer zero: it would never learn.

Module layout (state-dict keys relative to the slot the layer takes): ``gate`` (a 0-dim parameter) and
``layer.*`` (the wrapped :class:`GlobalLayer`'s own keys, e.g. ``layer.u.0.weight``, ``layer.bn_out.weight``).
The wrapped layer is built exactly as with ``init="random"`` (same random numbers drawn), so the two
inits differ only by the gate.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._config import GlobalLayerConfig
from ._global_layer import GlobalLayer

__all__ = ["GatedGlobalLayer", "with_init"]


class GatedGlobalLayer(nn.Module):
    """``y = f + gate * layer(f)`` with ``gate`` a learned scalar, 0 at the start (ReZero).

    Args:
        layer: the Global layer G; its config must have ``residual=False`` (the gate is the skip).
    """

    def __init__(self, layer: GlobalLayer) -> None:
        super().__init__()
        if layer.config.residual:
            raise ValueError(
                "GatedGlobalLayer adds the input itself (y = f + a * G(f)): wrap a layer with residual=False"
            )
        self.layer = layer
        self.gate = nn.Parameter(torch.zeros((), device=_device_of(layer)))  # a = 0: y = f at insertion

    @property
    def config(self) -> GlobalLayerConfig:
        return self.layer.config

    @property
    def channels(self) -> int:
        return self.layer.channels

    @property
    def name(self) -> str | None:
        return self.layer.name

    def forward(self, f: Tensor) -> Tensor:  # f: (B, C, H, W)
        return f + self.gate * self.layer(f)  # (B, C, H, W)

    def extra_repr(self) -> str:
        return f"gate={float(self.gate.detach()):.4g}"


def with_init(layer: GlobalLayer) -> nn.Module:
    """``layer`` as its config's ``init`` asks: itself for ``"random"``, gated for ``"identity"``."""
    if layer.config.init == "identity":
        return GatedGlobalLayer(layer)
    return layer


def _device_of(module: nn.Module) -> torch.device:
    for tensor in list(module.parameters()) + list(module.buffers()):
        return tensor.device
    return torch.device("cpu")
