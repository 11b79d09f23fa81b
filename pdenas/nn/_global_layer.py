"""The Global layer (Kag & Saligrama, CVPR 2022, Sec. 3.2, Fig. 2).

Given the input feature map f, the layer computes ``h = init_block(f)``, predicts the PDE's
coefficient fields from h with depthwise 3x3 convolutions,

    u   = ReLU(BN(dwconv(h)))          v   = ReLU(BN(dwconv(h)))          (advection, Eq. 7)
    D_x = ReLU(BN(dwconv(h)))          D_y = ReLU(BN(dwconv(h)))          (diffusion, Eq. 7)

runs K explicit steps of the advection-diffusion scheme (:func:`pdenas.nn.functional.global_pde`)
and returns ``ReLU(BN(H_K))`` (plus f when residual). The coefficient BatchNorms use
``eps = channels`` by default, as the paper's public code does (``BatchNorm2d(C, C)``): the large
eps keeps the coefficients small and the explicit scheme stable.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import functional as PF
from ._config import GlobalLayerConfig

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
        cfg = self.config
        h = self.init_block(f)  # (B, C, H, W)
        u = self.u(h) if self.u is not None else 0.0
        v = self.v(h) if self.v is not None else 0.0
        Dx = self.diff_x(h) if self.diff_x is not None else cfg.cdx
        Dy = self.diff_y(h) if self.diff_y is not None else cfg.cdy
        H = PF.global_pde(
            f, h, u, v, Dx, Dy,
            iterations=cfg.iterations, dt=cfg.dt, dx=cfg.dx, dy=cfg.dy, forcing=cfg.forcing,
        )  # (B, C, H, W)
        if self.training:
            self._check_finite(H)
        out = self.relu(self.bn_out(H))
        return out + f if cfg.residual else out

    def _check_finite(self, H: Tensor) -> None:
        if not bool(torch.isfinite(H).all()):
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
