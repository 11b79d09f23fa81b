"""The train/validation split and the training subset: seeded, stratified, disjoint."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pdenas.data import DataError, clear_memo, load_dataset
from pdenas.data._split import stratified_split, stratified_subset


def _rows(x: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in x}


def test_same_seed_same_split_other_seed_other_split() -> None:
    a = load_dataset("digits", seed=1)
    clear_memo()
    b = load_dataset("digits", seed=1)
    c = load_dataset("digits", seed=2)
    assert a is not b
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.val_y, b.val_y)
    assert not torch.equal(a.val_x, c.val_x)


def test_split_is_disjoint_and_complete() -> None:
    y = torch.arange(1000) % 7
    train, val = stratified_split(y, val_fraction=0.25, seed=0)
    assert set(train.tolist()).isdisjoint(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(1000))


def test_validation_images_never_appear_in_training() -> None:
    data = load_dataset("digits", seed=0)
    # load_digits holds no two identical bitmaps, so image identity tells images apart
    assert len(_rows(torch.cat([data.train_x, data.val_x]).flatten(1))) == 1797
    assert not _rows(data.train_x.flatten(1)) & _rows(data.val_x.flatten(1))


def test_split_is_stratified() -> None:
    data = load_dataset("digits", val_fraction=0.2)
    total = torch.bincount(torch.cat([data.train_y, data.val_y]), minlength=10)
    val = torch.bincount(data.val_y, minlength=10)
    for n, v in zip(total.tolist(), val.tolist()):
        assert abs(v - 0.2 * n) < 1  # each class within one image of its share
    assert val.sum() == math.ceil(0.2 * 1797)


def test_split_ignores_the_global_random_state() -> None:
    y = torch.arange(500) % 5
    first = stratified_split(y, val_fraction=0.3, seed=7)
    np.random.seed(123)
    torch.manual_seed(123)
    again = stratified_split(y, val_fraction=0.3, seed=7)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[1], stratified_split(y, val_fraction=0.3, seed=8)[1])


def test_every_class_gets_a_training_and_a_validation_image() -> None:
    y = torch.tensor([0] * 3 + [1] * 40 + [2] * 57)
    train, val = stratified_split(y, val_fraction=0.34, seed=0)  # 0.34 * 3 >= 1: class 0 gets one
    assert torch.bincount(y[val], minlength=3).min() >= 1 and torch.bincount(y[train], minlength=3).min() >= 1


@pytest.mark.parametrize(
    ("y", "val_fraction", "message"),
    [
        (torch.tensor([0, 0, 1, 2, 2, 2]), 0.5,
         "class 'b' has 1 image(s), too few to give both a training and a validation image: each class needs at "
         "least 2; add images to it or remove it"),
        (torch.tensor([0] * 4 + [1] * 96 + [2] * 100), 0.01,
         "class 'a' has 4 image(s), too few to give both a training and a validation image at val_fraction=0.01: "
         "use val_fraction between 0.25 and 0.75, or add images to it"),
        (torch.tensor([0] * 4 + [1] * 96 + [2] * 100), 0.9,
         "class 'a' has 4 image(s), too few to give both a training and a validation image at val_fraction=0.9: "
         "use val_fraction between 0.25 and 0.75, or add images to it"),
    ],
    ids=["single-image", "no-validation-image", "no-training-image"],
)
def test_a_class_too_small_to_split_is_one_line(y: torch.Tensor, val_fraction: float, message: str) -> None:
    with pytest.raises(DataError) as info:
        stratified_split(y, val_fraction=val_fraction, seed=0, classes=["a", "b", "c"])
    assert str(info.value) == message


def test_a_class_too_small_to_split_through_load_dataset(tmp_path, write_digit_folder) -> None:
    write_digit_folder(tmp_path / "src", per_class=1, classes=3)
    with pytest.raises(DataError, match=r"^class '0' has 1 image\(s\), too few .*each class needs at least 2"):
        load_dataset(str(tmp_path / "src"))
    assert load_dataset(str(tmp_path / "src"), val_fraction=0.0).train_x.shape[0] == 3  # no split: no need


def test_zero_validation_fraction() -> None:
    data = load_dataset("digits", val_fraction=0.0)
    assert data.val_x.shape[0] == 0 and data.train_x.shape[0] == 1797


def test_subset_caps_training_only_and_is_stratified() -> None:
    full = load_dataset("digits", seed=5)
    small = load_dataset("digits", seed=5, subset=200)
    assert small.train_x.shape[0] == 200
    assert torch.equal(small.val_x, full.val_x) and torch.equal(small.val_y, full.val_y)  # unaffected
    counts = torch.bincount(small.train_y, minlength=10)
    assert int(counts.min()) >= 19 and int(counts.max()) <= 21  # ~proportional (classes are ~equal)
    assert _rows(small.train_x.flatten(1)) <= _rows(full.train_x.flatten(1))
    again = load_dataset("digits", seed=5, subset=200)
    assert again is small  # memoized
    larger = load_dataset("digits", seed=5, subset=10_000)
    assert larger.train_x.shape[0] == full.train_x.shape[0]


def test_subset_proportional_for_unbalanced_classes() -> None:
    y = torch.tensor([0] * 600 + [1] * 300 + [2] * 100)
    chosen = stratified_subset(y, 100, seed=0)
    assert torch.bincount(y[chosen]).tolist() == [60, 30, 10]
    assert torch.equal(chosen, stratified_subset(y, 100, seed=0))
    assert not torch.equal(chosen, stratified_subset(y, 100, seed=1))
    assert torch.equal(chosen, chosen.unique())  # sorted, no repeats


def test_subset_dropping_fewer_images_than_classes() -> None:
    y = torch.arange(100) % 10
    chosen = stratified_subset(y, 97, seed=0)
    assert chosen.numel() == 97 == chosen.unique().numel()
    assert set(y[chosen].tolist()) == set(range(10))


def test_subset_smaller_than_the_number_of_classes_is_one_line() -> None:
    with pytest.raises(DataError) as info:
        load_dataset("digits", subset=9)
    assert str(info.value) == (
        "subset=9 is smaller than the number of classes (10): every class needs a training image; "
        "use subset >= 10 or no subset"
    )
    assert load_dataset("digits", subset=10).train_y.unique().numel() == 10


def test_subset_that_would_lose_a_class_is_one_line() -> None:
    y = torch.tensor([0] * 1000 + [1] * 2 + [2] * 2)
    with pytest.raises(DataError, match=r"^subset=3 leaves class 'b' \(2 training images\) without a training image"):
        stratified_subset(y, 3, seed=0, classes=["a", "b", "c"])


def test_fewer_than_two_classes_is_one_line(tmp_path, write_digit_folder) -> None:
    write_digit_folder(tmp_path / "one", per_class=6, classes=1)
    with pytest.raises(DataError) as info:
        load_dataset(str(tmp_path / "one"))
    assert str(info.value) == (
        "dataset 'one' has 1 class ('0'): a classifier needs at least 2; put each class's images in a folder "
        "of its own (PATH/<class>/<image>)"
    )


def test_same_arguments_return_the_same_object() -> None:
    assert load_dataset("digits", seed=4) is load_dataset("digits", seed=4)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"val_fraction": 1.0}, "val_fraction must be in"),
        ({"val_fraction": -0.1}, "val_fraction must be in"),
        ({"subset": 0}, "subset must be a positive"),
        ({"image_size": 0}, "image_size must be a positive"),
        ({"seed": 1.5}, "seed must be an integer"),
    ],
)
def test_bad_options(options: dict, message: str) -> None:
    with pytest.raises(DataError, match=message) as info:
        load_dataset("digits", **options)
    assert "\n" not in str(info.value)
