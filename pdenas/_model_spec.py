"""The user's model, named on the command line (``--model``) and given weights (``--weights``).

A model spec is one string:

* a zoo name (``resnet56``, see :func:`pdenas.zoo.list_models`);
* ``tv:NAME``, a torchvision model built with ``weights=None`` (``tv:resnet18``);
* ``package.module:factory``, a callable returning an ``nn.Module`` (``mypkg.nets:build``); it is
  called with ``num_classes=`` and ``in_channels=`` when its signature accepts them.

Where a torchvision model or a factory takes no ``in_channels``, its first 3-channel convolution is
replaced by one with ``in_channels`` inputs. Weights are loaded with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Union, cast

import torch
from torch import nn

from ._util import first_line
from .zoo import create_model, list_models

__all__ = [
    "ModelSpecError", "WeightsError", "build_model", "load_weights", "describe_key_mismatch", "read_tensor_file",
    "weights_normalization",
]

_Pair = tuple[int, int]
_Padding = Union[str, tuple[int, int]]
_TV_PREFIX = "tv:"
_SHOWN_KEYS = 5


class ModelSpecError(ValueError):
    """A model spec names no model, or the model could not be built."""


class WeightsError(ModelSpecError):
    """A weights file is missing, unreadable, or does not fit the model."""


def build_model(spec: str, *, num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """Build the model named by ``spec`` with ``num_classes`` outputs and ``in_channels`` inputs."""
    if not isinstance(spec, str) or not spec.strip():
        raise ModelSpecError(f"--model must be a zoo name, tv:NAME or package.module:factory, got {spec!r}")
    spec = spec.strip()
    if spec.startswith(_TV_PREFIX):
        return _torchvision_model(spec[len(_TV_PREFIX):], num_classes=num_classes, in_channels=in_channels)
    if ":" in spec:
        return _factory_model(spec, num_classes=num_classes, in_channels=in_channels)
    if spec in list_models():
        return create_model(spec, num_classes=num_classes, in_channels=in_channels)
    raise ModelSpecError(_unknown_model_message(spec))


def read_tensor_file(path: Path, error: type[Exception], *, missing: str, prefix: str = "", hint: str = "") -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``; a missing file raises ``error(missing)``
    and an unreadable one (not a torch file, a pickled object) ``error`` with one line saying why."""
    if not path.is_file():
        raise error(missing)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - unpickling errors become one line
        raise error(
            f"{prefix}cannot read {path} with torch.load(weights_only=True) ({type(err).__name__}: {first_line(err)}){hint}"
        ) from None


def load_weights(model: nn.Module, path: str | Path, *, strict: bool = True) -> nn.Module:
    """Load a state dict saved with ``torch.save`` into ``model`` (in place) and return ``model``.

    The file may hold the state dict itself, a dict with a ``state_dict`` key, or a checkpoint of
    :func:`pdenas.save_compressed` made with the identity plan (the uncompressed model, e.g. a study's
    ``original.pt`` or ``benchmarks/models/*.pt``); a ``module.`` prefix (``nn.DataParallel``) is
    removed. A mismatch names the missing and unexpected keys.
    """
    path = Path(path)
    loaded = read_tensor_file(
        path, WeightsError, missing=f"--weights: no file at {path}", prefix="--weights: ",
        hint="; save weights with torch.save(model.state_dict(), path)",
    )
    state = _state_dict_of(loaded, path)
    state = _strip_prefix(state, "module.", model)
    problem = _mismatch(model, state, strict=strict)
    if problem and _is_compressed(loaded):
        raise WeightsError(
            f"--weights {path} is a compressed model ({_plan_words(loaded)}), not the original: pass the original's "
            "weights (a state dict, or a checkpoint saved with the identity plan)"
        )
    if problem:
        raise WeightsError(f"--weights {path} does not fit the model: {problem}")
    model.load_state_dict(state, strict=strict)
    return model


def weights_normalization(path: str | Path) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """(mean, std) from the model card of a ``pdenas.save_compressed`` checkpoint at ``path`` (what the
    model was trained on); None for a plain state dict or a checkpoint without a card."""
    loaded = read_tensor_file(Path(path), WeightsError, missing=f"--weights: no file at {path}", prefix="--weights: ")
    metadata = loaded.get("metadata") if _is_compressed(loaded) else None
    card = metadata.get("model_card") if isinstance(metadata, Mapping) else None
    pre = card.get("preprocessing") if isinstance(card, Mapping) else None
    if not isinstance(pre, Mapping) or "mean" not in pre or "std" not in pre:
        return None
    return tuple(float(v) for v in pre["mean"]), tuple(float(v) for v in pre["std"])


def describe_key_mismatch(missing: Iterable[str], unexpected: Iterable[str]) -> str:
    """``missing keys: a, b; unexpected keys: c`` (long lists cut, with a count)."""
    parts = []
    for label, keys in (("missing keys", list(missing)), ("unexpected keys", list(unexpected))):
        if keys:
            parts.append(f"{label}: {_key_list(keys)}")
    return "; ".join(parts)


# --- building -----------------------------------------------------------------------------------


def _torchvision_model(name: str, *, num_classes: int, in_channels: int) -> nn.Module:
    import torchvision

    known = torchvision.models.list_models()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"; did you mean {', '.join('tv:' + c for c in close)}?" if close else ""
        raise ModelSpecError(f"unknown torchvision model 'tv:{name}'{hint} (see torchvision.models.list_models())")
    try:
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    except Exception as err:  # noqa: BLE001
        raise ModelSpecError(f"cannot build tv:{name}: {type(err).__name__}: {first_line(err)}") from None
    return _with_in_channels(model, in_channels, spec=f"tv:{name}")


def _factory_model(spec: str, *, num_classes: int, in_channels: int) -> nn.Module:
    factory = _import_factory(spec)
    accepted = _keyword_arguments(factory, num_classes=num_classes, in_channels=in_channels)
    try:
        model = factory(**accepted)
    except Exception as err:  # noqa: BLE001 - the user's code; report it in one line
        raise ModelSpecError(f"factory {spec!r} failed: {type(err).__name__}: {first_line(err)}") from None
    if not isinstance(model, nn.Module):
        raise ModelSpecError(f"factory {spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model if "in_channels" in accepted else _with_in_channels(model, in_channels, spec=spec)


def _import_factory(spec: str) -> Callable[..., Any]:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ModelSpecError(f"--model {spec!r}: write a factory as package.module:function")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as err:  # noqa: BLE001 - ImportError or an error inside the user's module
        raise ModelSpecError(
            f"--model {spec!r}: cannot import {module_name!r} ({type(err).__name__}: {first_line(err)}); "
            "is it on PYTHONPATH?"
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ModelSpecError(f"--model {spec!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ModelSpecError(f"--model {spec!r}: {attr!r} is a {type(obj).__name__}, not a callable")
    return obj


def _keyword_arguments(factory: Callable[..., Any], **candidates: Any) -> dict[str, Any]:
    """The candidates the factory's signature accepts by name."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(candidates)
    named = {n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return {k: v for k, v in candidates.items() if k in named}


def _with_in_channels(model: nn.Module, in_channels: int, *, spec: str) -> nn.Module:
    """Replace the first 3-input convolution by one taking ``in_channels`` (freshly initialised)."""
    if in_channels == 3:
        return model
    for path, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3:
            replacement = nn.Conv2d(
                in_channels, module.out_channels, cast(_Pair, module.kernel_size), stride=cast(_Pair, module.stride),
                padding=cast(_Padding, module.padding), dilation=cast(_Pair, module.dilation), groups=1,
                bias=module.bias is not None, padding_mode=module.padding_mode,
            )
            parent_path, _, name = path.rpartition(".")
            setattr(model.get_submodule(parent_path) if parent_path else model, name, replacement)
            return model
    raise ModelSpecError(f"{spec}: found no 3-channel input convolution to adapt to in_channels={in_channels}")


def _unknown_model_message(spec: str) -> str:
    zoo = list_models()
    close = difflib.get_close_matches(spec, zoo, n=1)
    hints = [f"did you mean {close[0]!r}?"] if close else []
    try:
        import torchvision

        if spec in torchvision.models.list_models():
            hints.insert(0, f"for the torchvision model write 'tv:{spec}'")
    except ImportError:  # pragma: no cover - torchvision is a dependency
        pass
    hint = f" ({'; '.join(hints)})" if hints else ""
    return (
        f"unknown model {spec!r}{hint}; --model takes a zoo name ({', '.join(zoo)}), "
        "tv:NAME for torchvision, or package.module:factory"
    )


# --- weights ------------------------------------------------------------------------------------


def _state_dict_of(loaded: Any, path: Path) -> Mapping[str, torch.Tensor]:
    if _is_compressed(loaded) and _has_global_layers(loaded):
        raise WeightsError(
            f"--weights {path} is a compressed model ({_plan_words(loaded)}), not the original: load it with "
            "pdenas.load_compressed, or pass the original's weights"
        )
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise WeightsError(
            f"--weights {path} holds a {type(loaded).__name__}, not a state dict; "
            "save weights with torch.save(model.state_dict(), path)"
        )
    return loaded


def _is_compressed(loaded: Any) -> bool:
    """A checkpoint of ``pdenas.save_compressed`` (its plan says what was kept; plain data, read here
    without the surgery package, which builds on this module)."""
    return isinstance(loaded, Mapping) and loaded.get("format") == "pdenas.compressed"


def _stage_plans(loaded: Mapping[str, Any]) -> dict[str, Any]:
    plan = loaded.get("plan")
    stages = plan.get("stages") if isinstance(plan, Mapping) else None
    return dict(stages) if isinstance(stages, Mapping) else {}


def _has_global_layers(loaded: Mapping[str, Any]) -> bool:
    return any(isinstance(p, Mapping) and p.get("global_layer") is not None for p in _stage_plans(loaded).values())


def _plan_words(loaded: Mapping[str, Any]) -> str:
    parts = []
    for name, plan in _stage_plans(loaded).items():
        if isinstance(plan, Mapping):
            parts.append(f"{name}: keep {plan.get('keep')}" + (" + Global" if plan.get("global_layer") is not None else ""))
    return "; ".join(parts[:4]) + ("; ..." if len(parts) > 4 else "") if parts else "no plan"


def _strip_prefix(state: Mapping[str, torch.Tensor], prefix: str, model: nn.Module) -> Mapping[str, torch.Tensor]:
    own = model.state_dict()
    if state and all(k.startswith(prefix) for k in state) and not any(k.startswith(prefix) for k in own):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def _mismatch(model: nn.Module, state: Mapping[str, torch.Tensor], *, strict: bool) -> str:
    own = model.state_dict()
    missing = [k for k in own if k not in state] if strict else []
    unexpected = [k for k in state if k not in own] if strict else []
    shapes = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problem = describe_key_mismatch(missing, unexpected)
    if shapes:
        problem += ("; " if problem else "") + f"shape mismatches (file != model): {_key_list(shapes)}"
    return problem


def _key_list(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN_KEYS])
    more = len(keys) - _SHOWN_KEYS
    return shown + (f" and {more} more" if more > 0 else "")
