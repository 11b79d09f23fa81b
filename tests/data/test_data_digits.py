"""The embedded default dataset: scikit-learn's digits at 32x32, one channel, no flips."""

from __future__ import annotations

import pytest
import torch

from pdenas.data import ImageData, list_datasets, load_dataset


def test_builtin_names_are_registered() -> None:
    assert {"digits", "cifar10", "cifar100"} <= set(list_datasets())


def test_digits_shapes_classes_and_range() -> None:
    data = load_dataset("digits")
    assert isinstance(data, ImageData)
    assert data.name == "digits"
    assert data.classes == [str(d) for d in range(10)] and data.num_classes == 10
    assert data.input_size == (1, 32, 32)
    assert data.train_x.dtype == torch.uint8 and data.val_x.dtype == torch.uint8
    assert data.train_x.shape[1:] == (1, 32, 32) and data.val_x.shape[1:] == (1, 32, 32)
    assert data.train_y.dtype == torch.int64 and data.val_y.dtype == torch.int64
    assert data.train_x.shape[0] + data.val_x.shape[0] == 1797  # every digit, once
    assert int(data.train_x.min()) == 0 and int(data.train_x.max()) == 255  # 0..16 scaled to 0..255
    assert set(data.train_y.tolist()) == set(range(10)) == set(data.val_y.tolist())
    assert data.hflip is False  # a mirrored digit is another symbol
    assert data.skipped == 0 and not data.from_cache


def test_digits_image_size() -> None:
    data = load_dataset("digits", image_size=16)
    assert data.input_size == (1, 16, 16)
    assert data.crop_padding == 2  # 4 pixels at 32x32, scaled


def test_mean_std_are_those_of_the_training_images() -> None:
    data = load_dataset("digits")
    pixels = data.train_x.double() / 255
    assert data.mean[0] == pytest.approx(float(pixels.mean()), abs=1e-9)
    assert data.std[0] == pytest.approx(float(pixels.std(unbiased=False)), abs=1e-9)


def test_labels_match_the_images() -> None:
    """A nearest-class-mean classifier fit on the training split reads the validation digits."""
    data = load_dataset("digits")
    train = data.train_x.flatten(1).float()  # (N, 1024)
    centroids = torch.stack([train[data.train_y == c].mean(0) for c in range(10)])  # (10, 1024)
    predicted = torch.cdist(data.val_x.flatten(1).float(), centroids).argmin(1)
    assert float((predicted == data.val_y).float().mean()) > 0.85
