"""Named Global-layer variants, created by name (like timm's ``create_model``).

A variant is a factory ``(channels, config, init_block) -> nn.Module``; the built-in ones are the
paper's layer and its ablations (Kag & Saligrama, CVPR 2022, Table 6).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from torch import nn

from ._config import GlobalLayerConfig
from ._gated import with_init
from ._global_layer import GlobalLayer

__all__ = ["register_global_layer", "create_global_layer", "list_global_layers"]

GlobalLayerFactory = Callable[..., nn.Module]
_VARIANTS: dict[str, GlobalLayerFactory] = {}


def register_global_layer(name: str) -> Callable[[GlobalLayerFactory], GlobalLayerFactory]:
    """Decorator registering a Global-layer factory under ``name``."""

    def decorator(factory: GlobalLayerFactory) -> GlobalLayerFactory:
        if name in _VARIANTS:
            raise ValueError(f"Global layer variant {name!r} is already registered")
        _VARIANTS[name] = factory
        return factory

    return decorator


def list_global_layers() -> list[str]:
    return sorted(_VARIANTS)


def create_global_layer(
    name: str,
    channels: int,
    *,
    config: GlobalLayerConfig | None = None,
    init_block: nn.Module | None = None,
) -> nn.Module:
    """Build the variant ``name`` at ``channels`` channels (gated as :class:`GatedGlobalLayer` when
    ``config.init == "identity"``)."""
    try:
        factory = _VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown Global layer variant {name!r}; known: {list_global_layers()}") from None
    return with_init(factory(channels, config=config or GlobalLayerConfig(), init_block=init_block))


@register_global_layer("advection-diffusion")
def _advection_diffusion(channels: int, *, config: GlobalLayerConfig, init_block: nn.Module | None) -> GlobalLayer:
    """The paper's layer: learned advection and diffusion."""
    return GlobalLayer(channels, config, init_block=init_block)


@register_global_layer("diffusion")
def _diffusion_only(channels: int, *, config: GlobalLayerConfig, init_block: nn.Module | None) -> GlobalLayer:
    """No advection (u = v = 0), learned diffusion."""
    return GlobalLayer(channels, dataclasses.replace(config, advection=False), init_block=init_block)


@register_global_layer("constant-diffusion")
def _constant_diffusion(channels: int, *, config: GlobalLayerConfig, init_block: nn.Module | None) -> GlobalLayer:
    """Learned advection with constant diffusion ``cdx``, ``cdy``."""
    return GlobalLayer(channels, dataclasses.replace(config, diffusion="constant"), init_block=init_block)
