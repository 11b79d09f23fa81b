"""A registry of model factories, created by name (like timm's ``register_model``/``create_model``)."""

from __future__ import annotations

import difflib
from typing import Any, Callable

from torch import nn

__all__ = ["register_model", "create_model", "list_models", "UnknownModelError"]

ModelFactory = Callable[..., nn.Module]
_MODELS: dict[str, ModelFactory] = {}


class UnknownModelError(KeyError):
    """No model is registered under that name."""

    def __str__(self) -> str:  # KeyError quotes its message; print it as written
        return str(self.args[0])


def register_model(factory: ModelFactory) -> ModelFactory:
    """Decorator registering ``factory`` under its function name."""
    name = factory.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered")
    _MODELS[name] = factory
    return factory


def list_models() -> list[str]:
    """Names of the registered zoo models, sorted."""
    return sorted(_MODELS)


def create_model(name: str, *, num_classes: int = 10, **overrides: Any) -> nn.Module:
    """Build the zoo model ``name`` with ``num_classes`` outputs.

    ``overrides`` are passed to the factory (``*_global`` models take ``iterations=`` and ``dt=``).
    """
    try:
        factory = _MODELS[name]
    except KeyError:
        close = difflib.get_close_matches(name, _MODELS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UnknownModelError(f"unknown zoo model {name!r}{hint}; known: {', '.join(list_models())}") from None
    try:
        return factory(num_classes=num_classes, **overrides)
    except TypeError as err:
        raise ValueError(f"model {name!r} does not accept {sorted(overrides)}: {err}") from None
