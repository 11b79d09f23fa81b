"""Worker processes for the store tests (module-level functions: ``multiprocessing`` spawn imports them)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch


def state_digest(state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _setup(weights: Path, features_dir: Path) -> tuple[Any, Any]:
    from pdenas.distill import StageFeatures
    from pdenas.zoo import create_model

    torch.set_num_threads(1)
    model = create_model("resnet_tiny", in_channels=1)
    model.load_state_dict(torch.load(weights, weights_only=True))
    return model.eval(), StageFeatures.open(features_dir)


def ask_for_variant(weights: Path, features_dir: Path, store_dir: Path, variant: dict, barrier: Any, out: Any) -> None:
    """Wait for the other worker, then ask the store for the variant; report (reused, weights digest)."""
    from pdenas.distill import StageVariant, VariantStore

    model, features = _setup(weights, features_dir)
    barrier.wait()
    result = VariantStore(store_dir).get_or_distill(model, StageVariant.from_dict(variant), features, device="cpu")
    out.put((result.reused, state_digest(result.state_dict)))


def train_until_killed(weights: Path, features_dir: Path, store_dir: Path, variant: dict) -> None:
    """Ask for a variant whose training takes long; the test kills this process while it trains."""
    from pdenas.distill import StageVariant, VariantStore

    model, features = _setup(weights, features_dir)
    VariantStore(store_dir).get_or_distill(model, StageVariant.from_dict(variant), features, device="cpu")
