"""Datasets in ImageFolder layout, as a folder or a tar archive: layout detection, decoding, the
decoded-image disk cache and the one-line errors."""

from __future__ import annotations

import os
import tarfile
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image

from pdenas.data import DataError, clear_memo, load_dataset


def as_gray(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB decoded from grayscale files -> (N, 1, H, W), checking the channels agree."""
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])
    return x[:, :1]


def _all(data) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image and label of ``data`` (val_fraction=0 puts them all in training, in order)."""
    return data.train_x, data.train_y


def test_folder_of_real_images(tmp_path: Path, write_digit_folder: Callable) -> None:
    expected_x, expected_y = write_digit_folder(tmp_path / "digits-png")
    data = load_dataset(str(tmp_path / "digits-png"), val_fraction=0.0)
    x, y = _all(data)
    assert data.name == "digits-png" and data.classes == [str(d) for d in range(10)]
    assert data.input_size == (3, 32, 32) and data.hflip is True
    assert torch.equal(as_gray(x), expected_x)  # PNG is lossless: the very same pixels
    assert torch.equal(y, expected_y)
    assert not data.from_cache and data.skipped == 0


def test_tar_gz_gives_the_same_tensors_as_the_folder(
    tmp_path: Path, write_digit_folder: Callable, make_tar: Callable
) -> None:
    write_digit_folder(tmp_path / "src", per_class=5)
    folder = load_dataset(str(tmp_path / "src"), val_fraction=0.0)
    for name in ("src.tar.gz", "src.tgz", "src.tar"):
        archive = make_tar(tmp_path / "src", tmp_path / name, arcname="train")  # top folder train/
        data = load_dataset(archive, val_fraction=0.0)
        assert data.name == "src" and data.classes == folder.classes
        assert torch.equal(data.train_x, folder.train_x) and torch.equal(data.train_y, folder.train_y)
        assert "train/" in data.source


def test_split_is_the_same_for_folder_and_archive(
    tmp_path: Path, write_digit_folder: Callable, make_tar: Callable
) -> None:
    write_digit_folder(tmp_path / "src", per_class=10)
    archive = make_tar(tmp_path / "src", tmp_path / "src.tar.gz", arcname="src")
    a = load_dataset(str(tmp_path / "src"), seed=3)
    b = load_dataset(str(archive), seed=3)
    assert torch.equal(a.val_x, b.val_x) and torch.equal(a.train_y, b.train_y)


def test_class_folders_found_below_wrapper_and_split_folders(tmp_path: Path, write_digit_folder: Callable) -> None:
    write_digit_folder(tmp_path / "ds" / "outer" / "train", per_class=3, classes=3)
    write_digit_folder(tmp_path / "ds" / "outer" / "val", per_class=1, classes=3)
    (tmp_path / "ds" / "README.txt").write_text("not an image")  # ignored
    (tmp_path / "ds" / "outer" / ".hidden").mkdir()
    data = load_dataset(str(tmp_path / "ds"), val_fraction=0.0)
    assert data.classes == ["0", "1", "2"]
    assert data.train_x.shape[0] == 9  # train/ only
    assert "outer/train/" in data.source


def test_cifar_jpegs_folder_and_archive(cifar_folder: Path, tmp_path: Path, make_tar: Callable) -> None:
    data = load_dataset(str(cifar_folder), val_fraction=0.2, seed=0)
    assert data.classes == sorted(p.name for p in cifar_folder.iterdir())
    assert data.input_size == (3, 32, 32) and data.hflip
    assert data.train_x.shape[0] == 96 and data.val_x.shape[0] == 24
    assert torch.bincount(data.val_y).tolist() == [6, 6, 6, 6]
    assert 0.2 < min(data.mean) and max(data.mean) < 0.7  # natural images, not noise
    archive = make_tar(cifar_folder, tmp_path / "c.tar.gz", arcname="train")
    packed = load_dataset(str(archive), val_fraction=0.2, seed=0)
    assert torch.equal(packed.train_x, data.train_x) and torch.equal(packed.val_x, data.val_x)


def test_disk_cache_is_written_and_reused(tmp_path: Path, write_digit_folder: Callable, make_tar: Callable) -> None:
    write_digit_folder(tmp_path / "src", per_class=10)
    archive = make_tar(tmp_path / "src", tmp_path / "src.tar.gz", arcname="train")
    cache = tmp_path / "mycache"
    first = load_dataset(str(archive), cache_dir=cache)
    assert not first.from_cache
    files = list(cache.glob("*.pt"))
    assert len(files) == 1 and files[0].name.startswith("src-")
    assert load_dataset(str(archive), cache_dir=cache) is first  # in-process memo
    clear_memo()  # as in a new process
    second = load_dataset(str(archive), cache_dir=cache)
    assert second.from_cache and second is not first
    assert torch.equal(second.train_x, first.train_x) and torch.equal(second.val_y, first.val_y)
    assert second.classes == first.classes and second.source == first.source


def test_default_cache_dir_comes_from_the_environment(
    tmp_path: Path, _private_cache: Path, write_digit_folder: Callable
) -> None:
    write_digit_folder(tmp_path / "src", per_class=2, classes=2)
    load_dataset(str(tmp_path / "src"), val_fraction=0.5)
    assert len(list(_private_cache.glob("src-*.pt"))) == 1


def test_corrupt_cache_file_is_ignored_and_rebuilt(tmp_path: Path, write_digit_folder: Callable) -> None:
    write_digit_folder(tmp_path / "src", per_class=10, classes=3)
    first = load_dataset(str(tmp_path / "src"), cache_dir=tmp_path / "c")
    (cache_file,) = (tmp_path / "c").glob("*.pt")
    cache_file.write_bytes(b"\x00garbage, not a torch file")
    clear_memo()
    rebuilt = load_dataset(str(tmp_path / "src"), cache_dir=tmp_path / "c")
    assert not rebuilt.from_cache and torch.equal(rebuilt.train_x, first.train_x)
    clear_memo()
    assert load_dataset(str(tmp_path / "src"), cache_dir=tmp_path / "c").from_cache


def test_changed_folder_is_decoded_again(tmp_path: Path, write_digit_folder: Callable) -> None:
    write_digit_folder(tmp_path / "src", per_class=3, classes=3)
    before = load_dataset(str(tmp_path / "src"), val_fraction=0.0)
    Image.new("L", (32, 32), 7).save(tmp_path / "src" / "1" / "extra.png")
    after = load_dataset(str(tmp_path / "src"), val_fraction=0.0)  # no clear_memo(): the memo notices too
    assert not after.from_cache and after.train_x.shape[0] == before.train_x.shape[0] + 1


def test_undecodable_images_are_skipped_counted_and_warned(tmp_path: Path, write_digit_folder: Callable) -> None:
    write_digit_folder(tmp_path / "src", per_class=4, classes=3)
    (tmp_path / "src" / "0" / "broken.jpg").write_bytes(b"this is not a JPEG")
    good = (tmp_path / "src" / "2" / "0000.png").read_bytes()
    (tmp_path / "src" / "2" / "truncated.png").write_bytes(good[: len(good) // 2])
    with pytest.warns(UserWarning, match=r"skipped 2 image\(s\) in .*src .*first: 0/broken.jpg") as record:
        data = load_dataset(str(tmp_path / "src"), val_fraction=0.0)
    assert len([w for w in record if "skipped" in str(w.message)]) == 1  # one warning, not one per file
    assert "\n" not in str(record[0].message)
    assert data.skipped == 2 and data.train_x.shape[0] == 12
    clear_memo()
    with pytest.warns(UserWarning, match="skipped 2"):  # the cached copy still says so
        cached = load_dataset(str(tmp_path / "src"), val_fraction=0.0)
    assert cached.from_cache and cached.skipped == 2


def test_different_sizes_need_image_size(tmp_path: Path) -> None:
    for label, size in (("a", (32, 32)), ("b", (40, 24))):
        (tmp_path / "src" / label).mkdir(parents=True)
        Image.new("RGB", size, (10, 200, 30)).save(tmp_path / "src" / label / "x.png")
    with pytest.raises(DataError, match="different sizes .*pass image_size=N") as info:
        load_dataset(str(tmp_path / "src"), val_fraction=0.0)
    assert "\n" not in str(info.value)
    data = load_dataset(str(tmp_path / "src"), val_fraction=0.0, image_size=16)
    assert data.input_size == (3, 16, 16)
    assert data.train_x[:, :, 4:12, 4:12].float().mean((0, 2, 3)).round().tolist() == [10.0, 200.0, 30.0]


def test_empty_folder_error(tmp_path: Path) -> None:
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    (tmp_path / "empty" / "cat" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError) as info:
        load_dataset(str(tmp_path / "empty"))
    message = str(info.value)
    assert message.startswith(f"no images found in {tmp_path / 'empty'}")
    assert "<class>/<image>.jpg (ImageFolder layout)" in message and "\n" not in message


def test_empty_archive_error(tmp_path: Path) -> None:
    with tarfile.open(tmp_path / "nothing.tar.gz", "w:gz"):
        pass
    with pytest.raises(DataError, match="no images found in"):
        load_dataset(str(tmp_path / "nothing.tar.gz"))


def test_images_outside_class_folders_error(tmp_path: Path) -> None:
    (tmp_path / "flat").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "flat" / "a.png")
    with pytest.raises(DataError, match="not in class folders"):
        load_dataset(str(tmp_path / "flat"))


def test_missing_path_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "data.tar.gz"
    with pytest.raises(DataError) as info:
        load_dataset(str(missing))
    message = str(info.value)
    assert message.startswith(f"dataset path {missing} does not exist:") and "\n" not in message


def test_unknown_name_error_lists_registered_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as info:
        load_dataset("cifar")
    message = str(info.value)
    assert message.startswith("unknown dataset 'cifar'")
    assert "cifar10" in message and "cifar100" in message and "digits" in message and "\n" not in message


def test_file_that_is_not_an_archive_error(tmp_path: Path) -> None:
    (tmp_path / "data.zip").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(DataError, match="is a file but not a .tar"):
        load_dataset(str(tmp_path / "data.zip"))


def test_corrupt_archive_error(tmp_path: Path, write_digit_folder: Callable, make_tar: Callable) -> None:
    write_digit_folder(tmp_path / "src", per_class=20, classes=2)
    archive = make_tar(tmp_path / "src", tmp_path / "src.tar.gz", arcname="train")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataError, match="cannot read the archive"):
        load_dataset(str(archive))


def test_unwritable_cache_only_warns(tmp_path: Path, write_digit_folder: Callable) -> None:
    if os.geteuid() == 0:
        blocker = tmp_path / "blocker"
        blocker.write_text("a file where the cache folder should be")
        cache = blocker / "cache"
    else:  # pragma: no cover
        cache = tmp_path / "ro"
        cache.mkdir(mode=0o500)
    write_digit_folder(tmp_path / "src", per_class=2, classes=2)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        data = load_dataset(str(tmp_path / "src"), cache_dir=cache, val_fraction=0.5)
    assert data.train_x.shape[0] > 0
    assert any("could not write the decoded-image cache" in str(w.message) for w in record)


def test_classes_and_image_files_are_torchvisions(tmp_path: Path, write_digit_folder: Callable) -> None:
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes

    write_digit_folder(tmp_path / "src", per_class=2, classes=3)
    Image.new("RGB", (32, 32), (1, 2, 3)).save(tmp_path / "src" / "1" / "upper.JPG")  # case-insensitive, as torchvision
    Image.new("RGB", (32, 32), (1, 2, 3)).save(tmp_path / "src" / "1" / "anim.gif")  # not in IMG_EXTENSIONS
    (tmp_path / "src" / "2" / "labels.txt").write_text("not an image")
    data = load_dataset(str(tmp_path / "src"), val_fraction=0.0)
    classes, class_to_idx = find_classes(str(tmp_path / "src"))
    assert data.classes == classes and [class_to_idx[c] for c in data.classes] == list(range(3))
    assert torch.bincount(data.train_y).tolist() == [2, 3, 2]  # upper.JPG counted, anim.gif and labels.txt not
    assert ".gif" not in IMG_EXTENSIONS and ".jpg" in IMG_EXTENSIONS


def test_grayscale_palette_rgba_and_rgb_images_mix(tmp_path: Path) -> None:
    """A folder of mixed colour modes loads as RGB: gray pixels repeat on the 3 channels, alpha is dropped."""
    for label, mode, colour in (("a", "L", 90), ("b", "RGB", (10, 200, 30)), ("c", "RGBA", (40, 50, 60, 128))):
        (tmp_path / "src" / label).mkdir(parents=True)
        for i in range(2):
            Image.new(mode, (8, 8), colour).save(tmp_path / "src" / label / f"{i}.png")
    Image.new("RGB", (8, 8), (70, 80, 90)).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "src" / "a" / "p.png")
    data = load_dataset(str(tmp_path / "src"), val_fraction=0.0)
    assert data.train_x.shape == (7, 3, 8, 8) and data.input_size == (3, 8, 8)
    pixel = {tuple(x[:, 0, 0].tolist()) for x in data.train_x}
    assert pixel == {(90, 90, 90), (70, 80, 90), (10, 200, 30), (40, 50, 60)}
