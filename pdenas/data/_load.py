"""``load_dataset``: a registered name or an ImageFolder path in, a split :class:`ImageData` out.

Results are memoized per process: the same arguments return the same object, and the decoded images
are shared between splits that differ only in seed, validation fraction or subset.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path

import torch

from ._cache import resolve_cache_dir
from ._errors import DataError
from ._folder import archive_fingerprint, dataset_name, folder_stamp, is_archive_name, load_image_folder
from ._image_data import ImageData
from ._registry import RawImages, get_loader, list_datasets, suggest_name
from ._split import stratified_split, stratified_subset
from ._stats import channel_stats

__all__ = ["clear_memo", "load_dataset"]

_MEMO_SIZE = 4
_RAW_MEMO: OrderedDict[Hashable, RawImages] = OrderedDict()
_DATA_MEMO: OrderedDict[Hashable, ImageData] = OrderedDict()


def load_dataset(
    source: str | Path,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    subset: int | None = None,
    image_size: int | None = None,
    cache_dir: str | Path | None = None,
) -> ImageData:
    """Load ``source`` and split it into training and validation images.

    Args:
        source: a registered name (see :func:`list_datasets`: ``digits``, ``cifar10``, ``cifar100``)
            or a path to a folder in ImageFolder layout (``PATH/<class>/<image>``) or a ``.tar``,
            ``.tar.gz`` or ``.tgz`` archive of one. Registered names win over same-named folders
            (write ``./digits`` for the folder).
        seed: seeds the split and the subset; the same seed gives the same split.
        val_fraction: fraction of each class held out for validation, in [0, 1); each class must
            have enough images to give at least one to training and one to validation.
        subset: keep at most this many training images (stratified, at least one per class);
            validation is unaffected.
        image_size: resize every image to ``image_size`` x ``image_size``.
        cache_dir: downloads and decoded images; default ``$PDENAS_CACHE_DIR`` or ``~/.cache/pdenas``.
    """
    _check_options(seed=seed, val_fraction=val_fraction, subset=subset, image_size=image_size)
    cache = resolve_cache_dir(cache_dir)
    name, raw_key, load = _resolve(str(source), cache=cache, image_size=image_size)
    data_key = (raw_key, int(seed), float(val_fraction), subset)
    if data_key in _DATA_MEMO:
        _DATA_MEMO.move_to_end(data_key)
        return _DATA_MEMO[data_key]

    raw = _RAW_MEMO.get(raw_key)
    if raw is None:
        raw = load()
        _validate(raw, name)
    _remember(_RAW_MEMO, raw_key, raw)

    train, val = stratified_split(raw.y, val_fraction=val_fraction, seed=seed, classes=raw.classes)
    if subset is not None and subset < train.numel():
        train = train[stratified_subset(raw.y[train], subset, seed=seed, classes=raw.classes)]
    train_x = raw.x.index_select(0, train)  # (N, C, H, W), a copy: the split never aliases the memo
    mean, std = channel_stats(train_x)
    data = ImageData(
        name=name, source=raw.source, classes=list(raw.classes),
        train_x=train_x, train_y=raw.y.index_select(0, train),
        val_x=raw.x.index_select(0, val), val_y=raw.y.index_select(0, val),
        mean=mean, std=std, hflip=raw.hflip, skipped=raw.skipped, from_cache=raw.from_cache,
        seed=int(seed), val_fraction=float(val_fraction), subset=subset,
    )
    _remember(_DATA_MEMO, data_key, data)
    return data


def _resolve(
    source: str, *, cache: Path, image_size: int | None
) -> tuple[str, Hashable, Callable[[], RawImages]]:
    """``(dataset name, memo key, loader thunk)`` for ``source``."""
    loader = get_loader(source)
    if loader is not None:
        key = ("name", source, image_size, str(cache))
        return source, key, lambda: loader(cache_dir=cache, image_size=image_size)

    path = Path(source).expanduser()
    if not path.exists():
        if _looks_like_path(source):
            raise DataError(
                f"dataset path {source} does not exist: pass an ImageFolder folder or .tar.gz of one, "
                f"or a registered dataset ({', '.join(list_datasets())})"
            )
        raise DataError(
            f"unknown dataset {source!r}{suggest_name(source)}: pass one of {', '.join(list_datasets())} "
            "or a path to an ImageFolder folder or .tar.gz"
        )
    path = path.resolve()
    # In memory an archive is keyed by its size and mtime, a folder by its folders' mtimes (cheap: no
    # stat per image); the disk cache checks every image file's size and mtime.
    stamp = archive_fingerprint(path) if path.is_file() else folder_stamp(path)
    key = ("path", str(path), stamp, image_size, str(cache))
    return dataset_name(path), key, lambda: load_image_folder(path, cache_dir=cache, image_size=image_size)


def _looks_like_path(source: str) -> bool:
    return (
        os.sep in source or "/" in source or source.startswith((".", "~"))
        or is_archive_name(source) or Path(source).suffix != ""
    )


def _check_options(*, seed: int, val_fraction: float, subset: int | None, image_size: int | None) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise DataError(f"seed must be an integer, got {seed!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    if subset is not None and (isinstance(subset, bool) or not isinstance(subset, int) or subset < 1):
        raise DataError(f"subset must be a positive number of training images or None, got {subset!r}")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise DataError(f"image_size must be a positive integer or None, got {image_size!r}")


def _validate(raw: RawImages, name: str) -> None:
    x, y = raw.x, raw.y
    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.dim() != 4:
        got = getattr(x, "dtype", type(x).__name__)
        raise DataError(f"dataset {name!r} loader must return uint8 images (N, C, H, W), got {got}")
    if not isinstance(y, torch.Tensor) or y.dtype != torch.int64 or y.shape != (x.shape[0],):
        raise DataError(f"dataset {name!r} loader must return int64 labels (N,) for its {x.shape[0]} images")
    if x.shape[0] == 0:
        raise DataError(f"dataset {name!r} has no images")
    if int(y.min()) < 0 or int(y.max()) >= len(raw.classes):
        raise DataError(f"dataset {name!r} has labels outside [0, {len(raw.classes)}) (one per class name)")
    if len(raw.classes) < 2:
        found = f" ({raw.classes[0]!r})" if raw.classes else ""
        raise DataError(
            f"dataset {name!r} has {len(raw.classes)} class{found}: a classifier needs at least 2; "
            "put each class's images in a folder of its own (PATH/<class>/<image>)"
        )


def _remember(memo: OrderedDict, key: Hashable, value: object) -> None:
    memo[key] = value
    memo.move_to_end(key)
    while len(memo) > _MEMO_SIZE:
        memo.popitem(last=False)


def clear_memo() -> None:
    """Forget the datasets loaded in this process (the next load reads the disk cache or decodes)."""
    _RAW_MEMO.clear()
    _DATA_MEMO.clear()
