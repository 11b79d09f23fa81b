"""Deterministic, stratified index selection: the train/validation split and the training subset.

Both are scikit-learn's stratified ``train_test_split`` (each class contributes in proportion, within
one image of ``fraction * n``) seeded from the given seed (never the global RNG), so a seed names one
split. Before and after it the classes are checked, so a class too small to be split, or a subset
too small to hold every class, stops with one line saying what to change instead of a scikit-learn
traceback or a class the model never sees.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ._errors import DataError

__all__ = ["stratified_split", "stratified_subset"]


def stratified_split(
    y: Tensor, *, val_fraction: float, seed: int, classes: Sequence[str] | None = None
) -> tuple[Tensor, Tensor]:
    """Indices ``(train, val)`` of ``y`` (N,): about ``val_fraction`` of each class to validation, disjoint.

    With ``val_fraction > 0`` every class gets at least one training and one validation image, or
    :class:`DataError` says which class is too small (``classes`` names them; default: the label).
    Both index tensors are sorted (int64).
    """
    names = _names(y, classes)
    if val_fraction == 0:
        return torch.arange(y.numel()), torch.empty(0, dtype=torch.int64)
    counts = torch.bincount(y, minlength=len(names))  # (num_classes,)
    n_val = math.ceil(val_fraction * y.numel())  # scikit-learn's rounding of a fractional test_size
    smallest = int(counts.argmin())
    if int(counts[smallest]) < 2 or n_val < len(names) or y.numel() - n_val < len(names):
        raise DataError(_too_few_message(names[smallest], int(counts[smallest]), val_fraction))
    train, val = _train_test_split(y, test_size=val_fraction, seed=_derive(seed, "split"))
    for part in (train, val):  # scikit-learn keeps each class within one image of its share: check
        missing = torch.bincount(y[part], minlength=len(names)) == 0
        if bool(missing.any()):
            label = int(missing.nonzero()[0])
            raise DataError(_too_few_message(names[label], int(counts[label]), val_fraction))
    return train, val


def stratified_subset(y: Tensor, size: int, *, seed: int, classes: Sequence[str] | None = None) -> Tensor:
    """Sorted indices of ``size`` elements of ``y`` (N,), each class represented in proportion.

    Raises :class:`DataError` when ``size`` is smaller than the number of classes, or when a class
    would be left without an image.
    """
    names = _names(y, classes)
    if size >= y.numel():
        return torch.arange(y.numel())
    if size < len(names):
        raise DataError(
            f"subset={size} is smaller than the number of classes ({len(names)}): every class needs a "
            f"training image; use subset >= {len(names)} or no subset"
        )
    counts = torch.bincount(y, minlength=len(names))
    if int(counts.min()) < 2:
        name = names[int(counts.argmin())]
        raise DataError(
            f"class {name!r} has {int(counts.min())} training image(s), too few for a stratified subset "
            "(it needs 2): add images to it or use no subset"
        )
    # scikit-learn also needs a class's worth of images left out; dropping fewer than that is no
    # stratification problem, so those few are dropped at random (the check below still holds)
    stratify = y.numel() - size >= len(names)
    chosen, _ = _train_test_split(y, train_size=size, seed=_derive(seed, "subset"), stratify=stratify)
    missing = torch.bincount(y[chosen], minlength=len(names)) == 0
    if bool(missing.any()):
        label = int(missing.nonzero()[0])
        raise DataError(
            f"subset={size} leaves class {names[label]!r} ({int(counts[label])} training images) without "
            "a training image: use a larger subset or no subset"
        )
    return chosen


def _train_test_split(
    y: Tensor, *, seed: int, test_size: float | None = None, train_size: int | None = None, stratify: bool = True
) -> tuple[Tensor, Tensor]:
    """scikit-learn's ``train_test_split`` of the indices of ``y``, as sorted int64 tensors."""
    from sklearn.model_selection import train_test_split  # imported here: scikit-learn is slow to import

    labels = y.numpy()
    train, test = train_test_split(
        np.arange(labels.shape[0]), test_size=test_size, train_size=train_size,
        stratify=labels if stratify else None, random_state=seed,
    )
    return torch.from_numpy(np.sort(train)).long(), torch.from_numpy(np.sort(test)).long()


def _names(y: Tensor, classes: Sequence[str] | None) -> list[str]:
    if classes is not None:
        return list(classes)
    return [str(label) for label in range(int(y.max()) + 1 if y.numel() else 0)]


def _too_few_message(name: str, count: int, val_fraction: float) -> str:
    what = f"class {name!r} has {count} image(s), too few to give both a training and a validation image"
    if count < 2:
        return f"{what}: each class needs at least 2; add images to it or remove it"
    low = math.ceil(100 / count) / 100  # val_fraction * count >= 1: a validation image
    high = math.floor(100 * (1 - 1 / count)) / 100  # and a training image left
    return f"{what} at val_fraction={val_fraction:g}: use val_fraction between {low:g} and {high:g}, or add images to it"


def _derive(seed: int, purpose: str) -> int:
    """A 32-bit seed for ``purpose`` derived from ``seed`` (independent streams for split and subset;
    scikit-learn's ``random_state`` takes 32 bits)."""
    digest = hashlib.sha256(f"pdenas.data:{purpose}:{int(seed)}".encode()).digest()
    return int.from_bytes(digest[:4], "little")
