"""The train/validation split and the training subset: seeded, stratified, disjoint."""

from __future__ import annotations

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
        assert v == round(0.2 * n)


def test_small_classes_keep_a_training_image() -> None:
    y = torch.tensor([0, 0, 1, 2, 2, 2])
    train, val = stratified_split(y, val_fraction=0.5, seed=0)
    assert set(y[train].tolist()) == {0, 1, 2}
    assert torch.bincount(y[val], minlength=3).tolist() == [1, 0, 2]


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
