"""Registering a dataset by name, and what ``load_dataset`` checks of a loader's output."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import pdenas.data._registry as registry
from pdenas.data import DataError, RawImages, list_datasets, load_dataset, register_dataset
from pdenas.data._resize import resize_uint8


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made by a test vanish after it."""
    monkeypatch.setattr(registry, "_LOADERS", dict(registry._LOADERS))


def test_register_and_load_a_custom_dataset(scratch_registry: None) -> None:
    calls: list[dict] = []

    @register_dataset("stripes")
    def stripes(*, cache_dir: Path, image_size: int | None) -> RawImages:
        calls.append({"cache_dir": cache_dir, "image_size": image_size})
        x = torch.zeros(40, 3, 8, 8, dtype=torch.uint8)
        x[:20, :, ::2] = 255  # class 0: horizontal stripes
        x[20:, :, :, ::2] = 255  # class 1: vertical stripes
        y = torch.tensor([0] * 20 + [1] * 20)
        return RawImages(x, y, ["horizontal", "vertical"], hflip=False, source="synthetic stripes")

    assert "stripes" in list_datasets()
    data = load_dataset("stripes", val_fraction=0.25, image_size=None)
    assert data.name == "stripes" and data.source == "synthetic stripes" and data.hflip is False
    assert data.train_x.shape == (30, 3, 8, 8) and data.val_x.shape == (10, 3, 8, 8)
    assert calls[0]["image_size"] is None and isinstance(calls[0]["cache_dir"], Path)
    load_dataset("stripes", val_fraction=0.25, seed=1)
    assert len(calls) == 1  # decoded once per process, whatever the split


def test_duplicate_name_is_refused(scratch_registry: None) -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("digits")(lambda **_: None)


def test_loader_output_is_checked(scratch_registry: None) -> None:
    @register_dataset("floaty")
    def floaty(**_: object) -> RawImages:
        return RawImages(torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.int64), ["a"])

    @register_dataset("badlabels")
    def badlabels(**_: object) -> RawImages:
        return RawImages(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.arange(4), ["a", "b"])

    with pytest.raises(DataError, match="must return uint8 images"):
        load_dataset("floaty")
    with pytest.raises(DataError, match="labels outside"):
        load_dataset("badlabels")


def test_resize_uint8() -> None:
    x = torch.full((3, 3, 32, 32), 200, dtype=torch.uint8)
    assert resize_uint8(x, 32) is x
    small = resize_uint8(x, 16)
    assert small.shape == (3, 3, 16, 16) and small.dtype == torch.uint8 and bool((small == 200).all())
    assert resize_uint8(x, 48).shape == (3, 3, 48, 48)
