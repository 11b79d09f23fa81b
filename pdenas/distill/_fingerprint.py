"""Content fingerprints: what a cache entry was computed from, so that a stale one is never reused."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch
from torch import nn

__all__ = ["json_fingerprint", "model_fingerprint", "tensor_digest"]


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 (hex) of the model's class and every state-dict entry: name, dtype, shape and bytes.

    Two models with the same fingerprint compute the same function (same architecture class, same
    weights and buffers); any changed weight, BN statistic or shape changes it.
    """
    digest = hashlib.sha256(type(model).__qualname__.encode())
    for key, value in model.state_dict().items():
        digest.update(key.encode())
        tensor_digest(value, digest)
    return digest.hexdigest()


def tensor_digest(tensor: torch.Tensor, digest: Any) -> None:
    """Feed ``tensor``'s dtype, shape and raw bytes into a hashlib ``digest``."""
    value = tensor.detach().to("cpu").contiguous()
    digest.update(f"{value.dtype}{tuple(value.shape)}".encode())
    digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())  # any dtype, bf16 included


def json_fingerprint(data: Any, *, length: int = 64) -> str:
    """SHA-256 (hex, first ``length`` digits) of ``data`` as canonical JSON (sorted keys)."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]
