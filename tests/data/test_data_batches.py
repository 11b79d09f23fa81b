"""Mini-batches: seeded shuffling and augmentation, exact crops and flips, normalization."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from pdenas.data import Batches, DataError, augment_batch, iterate_batches, load_dataset


def _images(n: int = 300, channels: int = 3, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=generator)
    return x, torch.arange(n) % 10


def _epoch(batches) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(xb.clone(), yb.clone()) for xb, yb in batches]


def test_same_seed_same_batches_other_seed_other_batches() -> None:
    data = load_dataset("digits")
    a = _epoch(data.train_batches(64, seed=7))
    b = _epoch(data.train_batches(64, seed=7))
    c = _epoch(data.train_batches(64, seed=8))
    assert len(a) == len(b) == -(-data.train_x.shape[0] // 64)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    assert not torch.equal(a[0][0], c[0][0])


def test_epochs_differ_but_the_sequence_is_reproducible() -> None:
    x, y = _images()
    first = Batches(x, y, batch_size=50, shuffle=True, augment=True, hflip=True, seed=3)
    second = Batches(x, y, batch_size=50, shuffle=True, augment=True, hflip=True, seed=3)
    e1, e2 = _epoch(first), _epoch(first)
    assert not torch.equal(e1[0][1], e2[0][1])  # a new order each epoch
    f1, f2 = _epoch(second), _epoch(second)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(e1 + e2, f1 + f2))


def test_shapes_dtypes_and_coverage() -> None:
    x, y = _images(130)
    batches = list(iterate_batches(x, y, batch_size=32, shuffle=True, augment=True, hflip=True,
                                   generator=torch.Generator().manual_seed(0)))
    assert [b[0].shape for b in batches] == [(32, 3, 32, 32)] * 4 + [(2, 3, 32, 32)]
    assert all(b[0].dtype == torch.float32 and b[1].dtype == torch.int64 for b in batches)
    assert sorted(torch.cat([b[1] for b in batches]).tolist()) == sorted(y.tolist())  # each sample once
    dropped = Batches(x, y, batch_size=32, drop_last=True)
    assert len(dropped) == 4 and len(list(dropped)) == 4 and dropped.num_samples == 128


def test_without_augmentation_batches_are_the_normalized_images() -> None:
    x, y = _images(40, channels=2)
    mean, std = (0.5, 0.25), (0.2, 0.4)
    (xb, yb), = list(iterate_batches(x, y, batch_size=40, mean=mean, std=std))
    expected = (x.double() / 255 - torch.tensor(mean).view(1, 2, 1, 1)) / torch.tensor(std).view(1, 2, 1, 1)
    assert torch.allclose(xb.double(), expected, atol=1e-5)
    assert torch.equal(yb, y)


def _reference_crops(x: torch.Tensor, padding: int, hflip: bool, seed: int) -> torch.Tensor:
    """Loop-per-sample reference of the augmentation, drawing the same random numbers."""
    generator = torch.Generator().manual_seed(seed)
    batch, _, height, width = x.shape
    offsets = torch.randint(0, 2 * padding + 1, (2, batch), generator=generator)
    flips = torch.rand(batch, generator=generator) < 0.5 if hflip else torch.zeros(batch, dtype=torch.bool)
    padded = F.pad(x, (padding,) * 4)
    out = []
    for b in range(batch):
        dy, dx = offsets[:, b].tolist()
        crop = padded[b, :, dy : dy + height, dx : dx + width]
        out.append(crop.flip(-1) if flips[b] else crop)
    return torch.stack(out)


@pytest.mark.parametrize(("padding", "hflip", "size"), [(4, True, 32), (4, False, 32), (3, True, 20), (1, False, 8)])
def test_augmentation_is_exactly_crop_and_flip(padding: int, hflip: bool, size: int) -> None:
    x, _ = _images(64, size=size)
    out = augment_batch(x, padding=padding, hflip=hflip, generator=torch.Generator().manual_seed(11))
    assert out.shape == x.shape and out.dtype == torch.float32
    assert torch.equal(out, _reference_crops(x, padding, hflip, seed=11).float())


def test_flips_only_when_allowed() -> None:
    x, _ = _images(200)
    generator = torch.Generator().manual_seed(0)
    kept = augment_batch(x, padding=0, hflip=False, generator=generator)
    assert torch.equal(kept, x.float())  # no padding, no flip: identity
    flipped = augment_batch(x, padding=0, hflip=True, generator=generator)
    same = (flipped == x.float()).flatten(1).all(1)
    mirrored = (flipped == x.flip(-1).float()).flatten(1).all(1)
    assert bool((same | mirrored).all()) and 60 < int(mirrored.sum()) < 140


def test_digits_training_batches_never_flip() -> None:
    data = load_dataset("digits")
    assert data.hflip is False
    batches = data.train_batches(256, seed=0)
    assert batches.hflip is False and batches.augment and batches.padding == 4
    xb, _ = next(iter(batches))
    assert xb.shape[1:] == (1, 32, 32)


def test_training_statistics_normalize_to_zero_mean_unit_std() -> None:
    data = load_dataset("digits")
    images = torch.cat([xb for xb, _ in data.train_batches(256, seed=0, augment=False)])
    assert abs(float(images.mean())) < 1e-4 and abs(float(images.std()) - 1) < 1e-3
    val = torch.cat([xb for xb, _ in data.val_batches(100)])
    assert val.shape[0] == data.val_x.shape[0] and abs(float(val.mean())) < 0.1  # same statistics


def test_validation_batches_are_in_order_and_not_augmented() -> None:
    data = load_dataset("digits")
    labels = torch.cat([yb for _, yb in data.val_batches(50)])
    assert torch.equal(labels, data.val_y)
    a = _epoch(data.val_batches(50))
    assert all(torch.equal(p[0], q[0]) for p, q in zip(a, _epoch(data.val_batches(50))))


def test_device_argument() -> None:
    data = load_dataset("digits")
    xb, yb = next(iter(data.train_batches(8, seed=0, device="cpu")))
    assert xb.device.type == "cpu" and yb.device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batches_match_cpu() -> None:  # pragma: no cover - only where a GPU is present
    data = load_dataset("digits")
    cpu = _epoch(data.train_batches(64, seed=1))
    gpu = [(xb.cpu(), yb.cpu()) for xb, yb in data.train_batches(64, seed=1, device="cuda")]
    assert all(torch.allclose(a[0], b[0], atol=1e-5) and torch.equal(a[1], b[1]) for a, b in zip(cpu, gpu))


@pytest.mark.parametrize(
    ("x", "y", "batch_size", "message"),
    [
        (torch.zeros(4, 3, 8, 8), torch.zeros(4, dtype=torch.int64), 2, "must be uint8"),
        (torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.zeros(5, dtype=torch.int64), 2, "labels must be"),
        (torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.zeros(4, dtype=torch.int64), 0, "batch_size must be"),
    ],
)
def test_bad_inputs(x: torch.Tensor, y: torch.Tensor, batch_size: int, message: str) -> None:
    with pytest.raises(DataError, match=message):
        Batches(x, y, batch_size=batch_size)
