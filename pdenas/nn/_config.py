"""Configuration of a Global layer (Kag & Saligrama, CVPR 2022, Sec. 3).

One dataclass holds every setting of the layer so that it can be passed whole, stored in a
compression plan and round-tripped through JSON.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["GlobalLayerConfig", "GlobalLayerConfigError", "INITS"]

INITS = ("random", "identity")


class GlobalLayerConfigError(ValueError):
    """A Global layer setting is out of range or of the wrong type."""


@dataclass(frozen=True)
class GlobalLayerConfig:
    """Settings of one Global layer.

    Attributes:
        iterations: K, the number of explicit solver steps (>= 1).
        dt: time step of the solver (> 0).
        dx, dy: grid spacing along H and W, in pixels (positive integers; the shifts wrap around).
        diffusion: ``"learned"`` (D_x, D_y predicted from the features) or ``"constant"``
            (``cdx``, ``cdy`` everywhere).
        cdx, cdy: the constant diffusion coefficients used when ``diffusion="constant"``.
        advection: when False the velocity fields u, v are zero (pure diffusion).
        forcing: when False the source term ``D * 2 * dt * f`` is dropped.
        residual: add the layer's input to its output (the paper's layer with a skip: y = f + G(f)).
        coef_norm_eps: ``eps`` of the BatchNorms of the coefficient branches. ``"channels"``
            uses the channel count, as the paper's public code does (``BatchNorm2d(C, C)``),
            which keeps the coefficients small and the explicit scheme stable; a float overrides it.
        init: how the layer starts when inserted into a trained network. ``"random"``: the paper's
            layer, y = G(f) = ReLU(BN(H_K)) from its random initialisation (bit-identical to the layer
            without this setting). ``"identity"``: function-preserving insertion (Net2Net; ReZero,
            Bachlechner et al. 2020): y = f + a * G(f) with one learned scalar a = 0 at the start
            (:class:`pdenas.nn.GatedGlobalLayer`), so the network computes what it computed without the
            layer, and dL/da = <dL/dy, G(f)> lets a grow. It is a residual form of its own, so it
            requires ``residual=False``.
    """

    iterations: int = 1
    dt: float = 0.2
    dx: int = 1
    dy: int = 1
    diffusion: Literal["learned", "constant"] = "learned"
    cdx: float = 1.0
    cdy: float = 1.0
    advection: bool = True
    forcing: bool = True
    residual: bool = False
    coef_norm_eps: Literal["channels"] | float = "channels"
    init: Literal["random", "identity"] = "random"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`GlobalLayerConfigError` naming the first bad field."""
        if isinstance(self.iterations, bool) or not isinstance(self.iterations, int) or self.iterations < 1:
            raise GlobalLayerConfigError(f"iterations must be an integer >= 1, got {self.iterations!r}")
        if not _is_real(self.dt) or not self.dt > 0 or not math.isfinite(self.dt):
            raise GlobalLayerConfigError(f"dt must be a finite number > 0, got {self.dt!r}")
        for name in ("dx", "dy"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise GlobalLayerConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if self.diffusion not in ("learned", "constant"):
            raise GlobalLayerConfigError(
                f"diffusion must be 'learned' or 'constant', got {self.diffusion!r}"
            )
        for name in ("cdx", "cdy"):
            value = getattr(self, name)
            if not _is_real(value) or value < 0 or not math.isfinite(value):
                raise GlobalLayerConfigError(f"{name} must be a finite number >= 0, got {value!r}")
        for name in ("advection", "forcing", "residual"):
            if not isinstance(getattr(self, name), bool):
                raise GlobalLayerConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        eps = self.coef_norm_eps
        if eps != "channels" and (not _is_real(eps) or not eps > 0):
            raise GlobalLayerConfigError(
                f"coef_norm_eps must be 'channels' or a number > 0, got {eps!r}"
            )
        if self.init not in INITS:
            raise GlobalLayerConfigError(f"init must be 'random' or 'identity', got {self.init!r}")
        if self.init == "identity" and self.residual:
            raise GlobalLayerConfigError(
                "init='identity' already adds the layer's input (y = f + a * G(f), a = 0 at the start): "
                "set residual to false with it"
            )

    def norm_eps(self, channels: int) -> float:
        """The ``eps`` of the coefficient BatchNorms for a layer with ``channels`` channels."""
        return float(channels) if self.coef_norm_eps == "channels" else float(self.coef_norm_eps)

    def replace(self, **changes: Any) -> "GlobalLayerConfig":
        """A copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GlobalLayerConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise GlobalLayerConfigError(
                f"unknown Global layer setting(s) {unknown}; valid settings are {sorted(known)}"
            )
        return cls(**data)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
