"""The full CIFAR-10 JPEG archive (50,000 images): slow, run with ``pytest -m slow``."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from pdenas.data import clear_memo, load_dataset

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.mark.slow
def test_full_cifar10_archive(cifar_tar: Path, tmp_path: Path) -> None:
    start = time.perf_counter()
    data = load_dataset(str(cifar_tar), cache_dir=tmp_path)
    decode_s = time.perf_counter() - start
    assert data.classes == CLASSES and data.input_size == (3, 32, 32) and data.skipped == 0
    assert data.train_x.shape[0] == 45_000 and data.val_x.shape[0] == 5_000
    assert torch.bincount(data.val_y).tolist() == [500] * 10
    assert data.mean == pytest.approx((0.4914, 0.4822, 0.4465), abs=0.003)  # CIFAR-10's known means
    clear_memo()
    start = time.perf_counter()
    cached = load_dataset(str(cifar_tar), cache_dir=tmp_path)
    cached_s = time.perf_counter() - start
    assert cached.from_cache and torch.equal(cached.val_x, data.val_x)
    assert cached_s < decode_s
    print(f"CIFAR-10 tar: decode {decode_s:.1f} s, cached {cached_s:.2f} s")
