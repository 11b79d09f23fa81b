"""Decoding encoded images (bytes, or files to read) with PIL into RGB uint8 arrays, skipping the
undecodable ones.

Chunks of images are decoded in 2 threads while the archive is still being read (or the files
being read), so reading, decompression and decoding overlap. PIL's decoder itself releases the GIL,
but for 32x32 images most of the ~120 us an image costs is Python header parsing, so threads help
less than the core count suggests; the decoded tensors are cached on disk, so this is paid once
per dataset and machine. (torchvision's decoders are about 2.5x faster here but deprecated since
torchvision 0.29 and warn on every call.)
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["DecodeFailure", "decode_images"]

_CHUNK = 512


@dataclass(frozen=True)
class DecodeFailure:
    """An image that could not be read or decoded: its position among the items, and why."""

    index: int
    reason: str


def decode_images(
    items: Iterable[bytes | Path], *, image_size: int | None, workers: int = 2
) -> tuple[list[np.ndarray | None], list[DecodeFailure]]:
    """Decode ``items`` to RGB uint8 arrays (H, W, 3).

    ``items`` may be a generator (an archive being read): chunks are decoded while it produces more.
    With ``image_size`` every image is resized (bilinear, antialiased) to (image_size, image_size, 3).
    Returns one array per item, None where the item failed, and the failures in item order.
    """
    futures: list[Future[list[np.ndarray | str]]] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        chunk: list[bytes | Path] = []
        for item in items:
            chunk.append(item)
            if len(chunk) == _CHUNK:
                futures.append(pool.submit(_decode_chunk, chunk, image_size))
                chunk = []
        if chunk:
            futures.append(pool.submit(_decode_chunk, chunk, image_size))
        images: list[np.ndarray | None] = []
        failures: list[DecodeFailure] = []
        for future in futures:
            for result in future.result():
                if isinstance(result, str):
                    failures.append(DecodeFailure(len(images), result))
                    images.append(None)
                else:
                    images.append(result)
    return images, failures


def _decode_chunk(items: list[bytes | Path], image_size: int | None) -> list[np.ndarray | str]:
    return [_decode_one(item, image_size) for item in items]


def _decode_one(item: bytes | Path, image_size: int | None) -> np.ndarray | str:
    """``item`` as (H, W, 3) uint8, or a one-line reason why it could not be decoded."""
    try:
        blob = item.read_bytes() if isinstance(item, Path) else item
    except OSError as err:
        return f"cannot read ({err.strerror or err})"
    if not blob:
        return "empty file"
    try:
        with Image.open(io.BytesIO(blob)) as image:
            rgb = image.convert("RGB")  # decodes; grayscale, palette, CMYK and alpha become RGB
        if image_size is not None and rgb.size != (image_size, image_size):
            rgb = rgb.resize((image_size, image_size), Image.Resampling.BILINEAR)  # antialiased when shrinking
        return np.asarray(rgb)  # (H, W, 3)
    except Exception as err:  # noqa: BLE001  (unidentified, truncated, corrupt, decompression bomb...)
        text = " ".join(str(err).split()) or type(err).__name__
        return text[:160]
