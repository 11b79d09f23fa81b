"""``ImageData``: a dataset split into training and validation images, held as uint8 tensors, with
the statistics and flags the training loop needs and convenience batch iterators."""

from __future__ import annotations

from dataclasses import dataclass
import torch
from torch import Tensor

from ._batches import Batches

__all__ = ["ImageData"]


@dataclass(frozen=True, eq=False)
class ImageData:
    """Training and validation images of one dataset.

    Attributes:
        name: dataset name (registered name, or the folder/archive name).
        source: where the images came from, in words.
        classes: class names, index = label.
        train_x, train_y: training images uint8 (N, C, H, W) and labels int64 (N,).
        val_x, val_y: validation images uint8 (M, C, H, W) and labels int64 (M,), disjoint from training.
        mean, std: per-channel statistics of the training images, in [0, 1] units.
        hflip: whether horizontal flipping is a valid augmentation (False for digits).
        skipped: images left out because they could not be decoded.
        from_cache: whether the decoded images were read from the disk cache.
        seed, val_fraction, subset: how the split was made.
    """

    name: str
    source: str
    classes: list[str]
    train_x: Tensor  # (N, C, H, W) uint8
    train_y: Tensor  # (N,) int64
    val_x: Tensor  # (M, C, H, W) uint8
    val_y: Tensor  # (M,) int64
    mean: tuple[float, ...]
    std: tuple[float, ...]
    hflip: bool
    skipped: int = 0
    from_cache: bool = False
    seed: int = 0
    val_fraction: float = 0.1
    subset: int | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_size(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        _, channels, height, width = self.train_x.shape
        return (channels, height, width)

    @property
    def crop_padding(self) -> int:
        """Zero padding of the random-crop augmentation: 4 pixels at 32x32, scaled with the image."""
        return max(1, round(min(self.input_size[1:]) / 8))

    def train_batches(
        self,
        batch_size: int,
        *,
        seed: int,
        augment: bool = True,
        device: str | torch.device = "cpu",
        drop_last: bool = False,
    ) -> Batches:
        """Shuffled training batches, augmented (random crop, and flip when ``hflip``) unless
        ``augment=False``; each iteration is one epoch, reproducible from ``seed``."""
        return Batches(
            self.train_x, self.train_y, batch_size=batch_size, shuffle=True, augment=augment, hflip=self.hflip,
            mean=self.mean, std=self.std, seed=seed, device=device, drop_last=drop_last, padding=self.crop_padding,
        )

    def val_batches(self, batch_size: int, *, device: str | torch.device = "cpu") -> Batches:
        """Validation batches in a fixed order, not augmented."""
        return Batches(
            self.val_x, self.val_y, batch_size=batch_size, mean=self.mean, std=self.std, device=device,
        )
