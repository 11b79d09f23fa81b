"""``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes), upscaled.

Real data that needs no download, so it is the default dataset. Pixel values 0..16 are scaled to
0..255 and the images resized bilinearly to 32x32 (or ``image_size``), one channel. A mirrored digit is
not the same digit, so horizontal flips are off.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.nn import functional as F

from ._registry import RawImages, register_dataset

__all__ = ["load_digits_images"]

_DEFAULT_SIZE = 32


@register_dataset("digits")
def load_digits_images(*, cache_dir: Path | None = None, image_size: int | None = None) -> RawImages:
    """All 1,797 digits as (1797, 1, S, S) uint8 with S = ``image_size`` or 32."""
    from sklearn.datasets import load_digits  # imported here: scikit-learn is slow to import

    del cache_dir  # bundled with scikit-learn: nothing to download or cache
    size = image_size or _DEFAULT_SIZE
    bunch = load_digits()
    x = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) * (255.0 / 16.0)  # (N, 1, 8, 8)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=size < 8)
    x = x.round_().clamp_(0, 255).to(torch.uint8).contiguous()  # (N, 1, S, S)
    y = torch.as_tensor(bunch.target, dtype=torch.int64)  # (N,)
    classes = [str(name) for name in bunch.target_names]
    return RawImages(
        x, y, classes, hflip=False,
        source=f"scikit-learn load_digits (8x8, 0..16) resized to {size}x{size}",
    )
