"""``cifar10`` and ``cifar100``: torchvision's CIFAR training sets, downloaded once into the cache folder.

Offline (or on any other download failure) loading stops with one line saying to pass an ImageFolder
folder or archive instead (``--dataset PATH``).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ._errors import DataError
from ._registry import RawImages, register_dataset
from ._resize import resize_uint8

__all__ = ["load_cifar10", "load_cifar100"]

_SOCKET_TIMEOUT_S = 30.0  # a stalled connection fails instead of hanging the search


@register_dataset("cifar10")
def load_cifar10(*, cache_dir: Path, image_size: int | None = None) -> RawImages:
    """CIFAR-10's 50,000 training images (10 classes), (50000, 3, 32, 32) uint8."""
    from torchvision.datasets import CIFAR10

    return _load_cifar(CIFAR10, "CIFAR-10", cache_dir=cache_dir, image_size=image_size)


@register_dataset("cifar100")
def load_cifar100(*, cache_dir: Path, image_size: int | None = None) -> RawImages:
    """CIFAR-100's 50,000 training images (100 fine classes), (50000, 3, 32, 32) uint8."""
    from torchvision.datasets import CIFAR100

    return _load_cifar(CIFAR100, "CIFAR-100", cache_dir=cache_dir, image_size=image_size)


def _load_cifar(cls: Callable[..., Any], title: str, *, cache_dir: Path, image_size: int | None) -> RawImages:
    try:  # already downloaded: no network, no "Files already downloaded" chatter
        dataset = cls(root=str(cache_dir), train=True, download=False)
    except RuntimeError:
        dataset = _download(cls, title, cache_dir)
    x = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()  # (N, 32, 32, 3) -> (N, 3, 32, 32)
    y = torch.as_tensor(dataset.targets, dtype=torch.int64)  # (N,)
    if image_size is not None:
        x = resize_uint8(x, image_size)
    size = x.shape[-1]
    return RawImages(
        x, y, list(dataset.classes), hflip=True,
        source=f"torchvision {cls.__name__} training set in {cache_dir} ({size}x{size})",
    )


def _download(cls: Callable[..., Any], title: str, cache_dir: Path) -> Any:
    previous = socket.getdefaulttimeout()
    if previous is None:
        socket.setdefaulttimeout(_SOCKET_TIMEOUT_S)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        return cls(root=str(cache_dir), train=True, download=True)
    except Exception as err:  # noqa: BLE001  (offline, DNS, HTTP, disk full, bad archive: "not available")
        raise DataError(
            f"{title} is not in {cache_dir} and cannot be downloaded ({_short_reason(err)}): "
            "pass --dataset PATH to an ImageFolder folder or .tar.gz instead"
        ) from None
    finally:
        if previous is None:
            socket.setdefaulttimeout(None)


def _short_reason(err: BaseException) -> str:
    reason = getattr(err, "reason", None) or err  # urllib's URLError keeps the cause in .reason
    text = " ".join(str(reason).split()) or type(err).__name__
    text = f"{type(err).__name__}: {text}"
    return text if len(text) <= 120 else text[:117] + "..."
