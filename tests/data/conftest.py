"""Fixtures for the data-layer tests: a private cache folder per test, and small real-image datasets
written to tmp_path (scikit-learn digits as PNGs, a few CIFAR-10 JPEGs from the shared archive)."""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image

from pdenas.data import clear_memo
from pdenas.data._digits import load_digits_images

CIFAR_TAR = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets" / "cifar10-train-jpeg.tar.gz"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets an empty cache folder (never ~/.cache) and an empty in-process memo."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("PDENAS_CACHE_DIR", str(cache))
    clear_memo()
    yield cache
    clear_memo()


def _write_digit_folder(root: Path, *, per_class: int = 12, classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Write ``per_class`` real digits of each of the first ``classes`` classes as 32x32 grayscale
    PNGs in ImageFolder layout ``root/<digit>/<nnnn>.png``; return the expected (N, 1, 32, 32) uint8
    images and (N,) labels in the loader's order (class, then file name)."""
    raw = load_digits_images()
    images, labels = [], []
    for label in range(classes):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        members = torch.nonzero(raw.y == label).flatten()[:per_class]
        for k, index in enumerate(members.tolist()):
            Image.fromarray(raw.x[index, 0].numpy(), mode="L").save(folder / f"{k:04d}.png")
            images.append(raw.x[index])
            labels.append(label)
    return torch.stack(images), torch.tensor(labels)


def _make_tar(source: Path, target: Path, *, arcname: str) -> Path:
    """Pack the folder ``source`` as ``target`` (compression from its suffix) under ``arcname``."""
    mode = "w:gz" if target.name.endswith((".tar.gz", ".tgz")) else "w"
    with tarfile.open(target, mode) as archive:
        archive.add(source, arcname=arcname)
    return target


@pytest.fixture(scope="session")
def cifar_tar() -> Path:
    """The shared CIFAR-10 JPEG archive (tests only; the package never refers to it); skips if absent."""
    if not CIFAR_TAR.is_file():
        pytest.skip(f"CIFAR-10 JPEG archive not found at {CIFAR_TAR} (see shared/datasets/README.md)")
    return CIFAR_TAR.resolve()


@pytest.fixture(scope="session")
def cifar_folder(cifar_tar: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 real CIFAR-10 JPEGs (30 of each of the first 4 classes in the archive, read in about a
    second) copied out of the shared archive into an ImageFolder folder; skips when it is absent."""
    root = tmp_path_factory.mktemp("cifar") / "cifar-small"
    counts: dict[str, int] = {}
    with tarfile.open(cifar_tar, "r:gz") as archive:
        for member in archive:
            parts = member.name.split("/")  # train/<class>/<file>
            if not member.isfile() or len(parts) != 3:
                continue
            label = parts[1]
            if label not in counts:
                if len(counts) == 4:
                    break
                counts[label] = 0
            if counts[label] < 30:
                counts[label] += 1
                (root / label).mkdir(parents=True, exist_ok=True)
                (root / label / parts[2]).write_bytes(archive.extractfile(member).read())
    return root


@pytest.fixture
def write_digit_folder() -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """``write_digit_folder(root, per_class=12, classes=10)``: real digits as PNGs in ImageFolder
    layout; returns the expected images (N, 1, 32, 32) and labels (N,) in the loader's order."""
    return _write_digit_folder


@pytest.fixture
def make_tar() -> Callable[..., Path]:
    """``make_tar(folder, target, arcname=...)``: pack ``folder`` as a .tar/.tar.gz/.tgz."""
    return _make_tar
