"""Saving and loading a compressed model: the plan travels with the weights.

A checkpoint is a ``torch.save``'d dict of primitives and tensors, readable with
``torch.load(weights_only=True)``::

    {
        "format": "pdenas.compressed",
        "format_version": 1,
        "model": {"spec": "resnet56", "num_classes": 10, "in_channels": 3},  # how to rebuild the base
        "input_size": [3, 32, 32],        # (C, H, W) used to find the stages again
        "plan": {...},                    # CompressionPlan.to_dict()
        "metadata": {...},                # anything JSON-serialisable (accuracy, trial number, ...)
        "state_dict": {...},              # the compressed model's weights
    }

Loading rebuilds the base model from its spec (:func:`pdenas.surgery.build_model`), compresses it
with the stored plan and loads the weights strictly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from .._model_spec import ModelSpecError, build_model, describe_key_mismatch, read_tensor_file
from ._compress import compress
from ._plan import CompressionPlan, PlanError
from .._util import preserved_modes

__all__ = ["CheckpointError", "save_compressed", "load_compressed", "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION"]

CHECKPOINT_FORMAT = "pdenas.compressed"
CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A compressed-model checkpoint is missing, unreadable or does not fit its plan."""


def save_compressed(
    path: str | Path,
    model: nn.Module,
    *,
    plan: CompressionPlan,
    model_spec: str,
    input_size: Sequence[int],
    num_classes: int | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` (the result of ``compress(build_model(model_spec), plan, ...)``) to ``path``.

    Args:
        model_spec: how to rebuild the uncompressed model (zoo name, ``tv:NAME`` or
            ``package.module:factory``).
        input_size: (C, H, W) of one input; C is also the model's ``in_channels``.
        num_classes: outputs of the model; read from a forward pass when None.
        metadata: JSON-serialisable extras stored alongside (returned as ``pdenas_metadata``).
    """
    input_size = _input_size(input_size)
    metadata = dict(metadata or {})
    try:
        json.dumps(metadata)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"metadata must be JSON-serialisable (numbers, strings, lists, dicts): {err}") from None
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "model": {
            "spec": model_spec,
            "num_classes": num_classes if num_classes is not None else _num_classes(model, input_size),
            "in_channels": input_size[0],
        },
        "input_size": list(input_size),
        "plan": plan.to_dict(),
        "metadata": metadata,
        "state_dict": model.state_dict(),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path


def load_compressed(path: str | Path, *, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a compressed model saved by :func:`save_compressed`, in eval mode.

    The returned module carries ``pdenas_plan`` (the :class:`CompressionPlan`), ``pdenas_spec``
    (``{"spec", "num_classes", "in_channels", "input_size"}``) and ``pdenas_metadata`` (a dict).
    """
    checkpoint = _read(Path(path))
    spec = checkpoint["model"]
    input_size = _input_size(checkpoint["input_size"])
    try:
        plan = CompressionPlan.from_dict(checkpoint["plan"])
        base = build_model(spec["spec"], num_classes=spec["num_classes"], in_channels=spec["in_channels"])
    except (PlanError, ModelSpecError) as err:
        raise CheckpointError(f"{path}: {err}") from None
    model = compress(base, plan, torch.zeros(1, *input_size))
    _load_state(model, checkpoint["state_dict"], path)
    model.to(map_location)
    model.eval()
    setattr(model, "pdenas_plan", plan)  # plain attributes, not submodules
    setattr(model, "pdenas_spec", {**spec, "input_size": list(input_size)})
    setattr(model, "pdenas_metadata", dict(checkpoint.get("metadata") or {}))
    return model


def _read(path: Path) -> dict[str, Any]:
    checkpoint = read_tensor_file(path, CheckpointError, missing=f"no compressed-model checkpoint at {path}")
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is not a pdenas compressed-model checkpoint (write one with save_compressed; "
            "a plain state dict loads with load_weights)"
        )
    version = checkpoint.get("format_version")
    if version != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format_version={version!r}; this pdenas reads {CHECKPOINT_VERSION}")
    missing = [k for k in ("model", "input_size", "plan", "state_dict") if k not in checkpoint]
    if missing:
        raise CheckpointError(f"{path} is incomplete: missing {', '.join(missing)}")
    return checkpoint


def _load_state(model: nn.Module, state: Mapping[str, torch.Tensor], path: str | Path) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: the weights do not fit the model rebuilt from its plan: {describe_key_mismatch(missing, unexpected)}"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:  # shape mismatches
        detail = " ".join(str(err).split())
        raise CheckpointError(f"{path}: the weights do not fit the model rebuilt from its plan: {detail}") from None


def _num_classes(model: nn.Module, input_size: tuple[int, ...]) -> int:
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    with preserved_modes(model, False), torch.no_grad():
        out = model(torch.zeros(1, *input_size, device=device))
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise CheckpointError("cannot tell the model's number of classes from its output; pass num_classes=")
    return int(out.shape[1])


def _input_size(size: Sequence[int]) -> tuple[int, ...]:
    size = tuple(int(s) for s in size)
    if len(size) != 3 or min(size) < 1:
        raise CheckpointError(f"input_size must be (channels, height, width), got {size}")
    return size
