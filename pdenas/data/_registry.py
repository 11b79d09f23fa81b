"""A registry of named datasets (like timm's ``register_model``): ``@register_dataset("name")`` on a
loader makes ``load_dataset("name")`` work.

A loader is called as ``loader(cache_dir=Path, image_size=int | None)`` and returns every labelled
image of the dataset as :class:`RawImages`; ``load_dataset`` splits, subsets and normalizes them.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

__all__ = ["DatasetLoader", "RawImages", "get_loader", "list_datasets", "register_dataset", "suggest_name"]


@dataclass(frozen=True, eq=False)
class RawImages:
    """All labelled images of a dataset, before the train/validation split.

    Attributes:
        x: images, uint8, ``(N, C, H, W)``.
        y: labels, int64 in ``[0, len(classes))``, ``(N,)``.
        classes: class names, index = label.
        hflip: whether a horizontal flip keeps an image in its class (False for digits).
        source: where the images came from, in words.
        skipped: images that could not be decoded and were left out.
        from_cache: whether the images were read from the decoded-image disk cache.
    """

    x: Tensor  # (N, C, H, W) uint8
    y: Tensor  # (N,) int64
    classes: list[str]
    hflip: bool = True
    source: str = ""
    skipped: int = 0
    from_cache: bool = False


DatasetLoader = Callable[..., RawImages]
_LOADERS: dict[str, DatasetLoader] = {}


def register_dataset(name: str) -> Callable[[DatasetLoader], DatasetLoader]:
    """Decorator registering ``loader(*, cache_dir, image_size) -> RawImages`` under ``name``."""
    if not name or "/" in name or "\\" in name:
        raise ValueError(f"dataset name {name!r} must be a non-empty word without path separators")

    def decorator(loader: DatasetLoader) -> DatasetLoader:
        if name in _LOADERS:
            raise ValueError(f"dataset {name!r} is already registered")
        _LOADERS[name] = loader
        return loader

    return decorator


def list_datasets() -> list[str]:
    """Names of the registered datasets, sorted."""
    return sorted(_LOADERS)


def get_loader(name: str) -> DatasetLoader | None:
    """The loader registered under ``name``, or None."""
    return _LOADERS.get(name)


def suggest_name(name: str) -> str:
    """`` (did you mean 'x'?)`` for the closest registered name, or an empty string."""
    close = difflib.get_close_matches(name, _LOADERS, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
