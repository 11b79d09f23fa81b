"""Datasets in ImageFolder layout: ``PATH/<class>/<image>``, as a folder or a tar archive of one.

The level holding the class folders is found automatically: an archive (or folder) may wrap them in
one top folder such as ``train/``, and when the top level holds split folders one of which is
``train/``, that one is used. Class names are the sorted folder names and an image is a file with one
of torchvision's ``IMG_EXTENSIONS``, as torchvision's ``ImageFolder`` has them (its ``find_classes``
is not called: it reads one level of a real folder, while archives have none, and it takes hidden
folders such as ``.ipynb_checkpoints`` for classes); images are ordered by path, so a folder and an
archive of it give identical tensors. Archive members are read straight from the archive, never
extracted to disk. Grayscale, palette, CMYK and RGBA images are all converted to RGB.

Each image is decoded once: the uint8 tensors are saved in the cache folder, keyed by the absolute
path, the size and modification time of the archive (of every file, for a folder) and ``image_size``,
and later loads read that file instead.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ._cache import cache_file, read_cache, write_cache
from ._decode import decode_images
from ._errors import DataError
from ._registry import RawImages

__all__ = [
    "ARCHIVE_SUFFIXES",
    "archive_fingerprint",
    "dataset_name",
    "folder_stamp",
    "is_archive_name",
    "load_image_folder",
]

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
_SPLIT_FOLDER = "train"

Parts = tuple[str, ...]


def is_archive_name(name: str) -> bool:
    """Whether ``name`` ends like a tar archive (.tar, .tar.gz, .tgz...)."""
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def load_image_folder(path: Path, *, cache_dir: Path, image_size: int | None = None) -> RawImages:
    """Every image of the ImageFolder folder or archive ``path`` as RGB uint8 (N, 3, H, W).

    Undecodable images are skipped with one warning (count and first file) and counted in
    ``skipped``. Without ``image_size`` all images must share one size.
    """
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise DataError(f"dataset path {path} does not exist: pass an ImageFolder folder or a .tar.gz of one")
    archive = path.is_file()
    if archive and not (is_archive_name(path.name) or tarfile.is_tarfile(path)):
        raise DataError(
            f"dataset path {path} is a file but not a .tar, .tar.gz or .tgz archive: "
            "pass an ImageFolder folder (PATH/<class>/<image>.jpg) or a tar archive of one"
        )
    listing = _scan_folder(path) if not archive else None
    fingerprint = archive_fingerprint(path) if archive else _folder_fingerprint(path, listing or [])
    target = cache_file(cache_dir, dataset_name(path), str(path), fingerprint, image_size)

    payload = read_cache(target)
    if payload is not None:
        images = RawImages(
            payload["x"], payload["y"], list(payload["classes"]), hflip=True,
            source=payload.get("source", f"ImageFolder {path}"), skipped=payload["skipped"], from_cache=True,
        )
        _warn_skipped(path, images.skipped, payload["first_skipped"])
        return images

    names: list[Parts] = []
    if archive:
        decoded, failures = decode_images(_read_archive(path, names), image_size=image_size)
    else:
        names = [parts for parts, _ in listing or []]
        decoded, failures = decode_images([file for _, file in listing or []], image_size=image_size)
    root, classes, labels = _find_layout(names, path)
    chosen = sorted((label, names[i], i) for i, label in enumerate(labels) if label is not None)
    failed = {failure.index: failure.reason for failure in failures}
    failures = [f for f in failures if labels[f.index] is not None]  # images outside classes do not count
    first_skipped = ""
    if failures:  # the first in dataset order, so a folder and its archive report the same file
        first = min(failures, key=lambda f: (labels[f.index], names[f.index]))
        first_skipped = f"{'/'.join(names[first.index])}: {first.reason}"
    kept = [(decoded[i], label, name) for label, name, i in chosen if i not in failed]
    if not kept:
        raise DataError(f"no image in {path} could be decoded ({len(failures)} tried; first: {first_skipped})")
    _check_sizes(kept, path)
    x = torch.from_numpy(np.stack([image for image, _, _ in kept])).permute(0, 3, 1, 2).contiguous()  # (N, 3, H, W)
    y = torch.tensor([label for _, label, _ in kept], dtype=torch.int64)  # (N,)
    where = f" (class folders under {'/'.join(root)}/)" if root else ""
    size = f", resized to {image_size}x{image_size}" if image_size else ""
    source = f"ImageFolder {path}{where}{size}"
    write_cache(target, {
        "x": x, "y": y, "classes": classes, "skipped": len(failures), "first_skipped": first_skipped,
        "source": source,
    })
    _warn_skipped(path, len(failures), first_skipped)
    return RawImages(x, y, classes, hflip=True, source=source, skipped=len(failures), from_cache=False)


def dataset_name(path: Path) -> str:
    """The folder name, or the archive name without its .tar/.tar.gz/.tgz... suffix."""
    name = path.name
    for suffix in sorted(ARCHIVE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or name
    return name


def _image_extensions() -> tuple[str, ...]:
    """torchvision's ``IMG_EXTENSIONS`` (.jpg, .jpeg, .png, .ppm, .bmp, .pgm, .tif, .tiff, .webp)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS  # imported here: torchvision is slow to import

    return tuple(IMG_EXTENSIONS)


def _is_image(parts: Parts, extensions: tuple[str, ...]) -> bool:
    hidden = any(part.startswith(".") or part == "__MACOSX" for part in parts)
    return bool(parts) and not hidden and parts[-1].lower().endswith(extensions)


def _scan_folder(path: Path) -> list[tuple[Parts, Path]]:
    """Image files under ``path`` as (relative parts, file), hidden files and folders left out."""
    extensions = _image_extensions()
    found: list[tuple[Parts, Path]] = []
    for folder, subfolders, files in os.walk(path, followlinks=True):
        subfolders[:] = [d for d in subfolders if not d.startswith(".") and d != "__MACOSX"]
        rel = Path(folder).relative_to(path).parts
        for file in files:
            parts = (*rel, file)
            if _is_image(parts, extensions):
                found.append((parts, Path(folder, file)))
    return found


def _folder_fingerprint(path: Path, listing: list[tuple[Parts, Path]]) -> str:
    """A digest of every image file's relative path, size and modification time."""
    digest = hashlib.sha256()
    for parts, file in sorted(listing):
        try:
            stat = file.stat()
        except OSError:
            continue
        digest.update(f"{'/'.join(parts)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def folder_stamp(path: Path) -> str:
    """A cheap digest of the modification times of ``path`` and every folder below it: it changes
    when an image is added, removed or renamed (not when one is rewritten in place)."""
    digest = hashlib.sha256()
    for folder, subfolders, _ in os.walk(path, followlinks=True):
        subfolders.sort()
        digest.update(f"{folder}\0{os.stat(folder).st_mtime_ns}\n".encode())
    return digest.hexdigest()


def archive_fingerprint(path: Path) -> str:
    """Size and modification time of the archive ``path``."""
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def _read_archive(path: Path, names: list[Parts]) -> Iterator[bytes]:
    """The image members of the tar archive ``path``, read in one sequential pass: yields each
    member's bytes and appends its name parts to ``names``."""
    extensions = _image_extensions()
    try:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                if not member.isfile():
                    continue
                parts = tuple(part for part in member.name.split("/") if part not in ("", "."))
                if not _is_image(parts, extensions):
                    continue
                stream = archive.extractfile(member)
                if stream is None:
                    continue
                data = stream.read()
                names.append(parts)
                yield data
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise DataError(f"cannot read the archive {path} ({reason}): pass an intact .tar/.tar.gz or a folder") from None


def _find_layout(names: list[Parts], path: Path) -> tuple[Parts, list[str], list[int | None]]:
    """``(root, classes, labels)``: the level holding the class folders, their sorted names, and
    each name's class index (None for images outside the class folders)."""
    expected = f"expected {path}/<class>/<image>.jpg (ImageFolder layout)"
    if not names:
        raise DataError(f"no images found in {path}: {expected}")
    root: Parts = ()
    while True:
        below = [name[len(root):] for name in names if name[: len(root)] == root]
        children = sorted({rest[0] for rest in below if len(rest) >= 2})
        direct = {rest[0] for rest in below if len(rest) == 2}  # children holding images directly
        loose = any(len(rest) == 1 for rest in below)
        if not children:
            raise DataError(f"the images in {path} are not in class folders: {expected}")
        if not loose and not direct and len(children) == 1:
            root += (children[0],)  # a wrapper folder such as train/
        elif not loose and not direct and _SPLIT_FOLDER in children:
            root += (_SPLIT_FOLDER,)  # split folders (train/, val/...): use the training one
        else:
            break
    index = {name: i for i, name in enumerate(children)}
    depth = len(root)
    labels = [index[name[depth]] if name[:depth] == root and len(name) >= depth + 2 else None for name in names]
    return root, children, labels


def _check_sizes(kept: list[tuple[np.ndarray, int, Parts]], path: Path) -> None:
    first, _, first_name = kept[0]
    for image, _, name in kept:
        if image.shape != first.shape:  # (H, W, 3)
            raise DataError(
                f"images in {path} have different sizes ({first.shape[1]}x{first.shape[0]} {'/'.join(first_name)}, "
                f"{image.shape[1]}x{image.shape[0]} {'/'.join(name)}): pass image_size=N to resize them all to NxN"
            )


def _warn_skipped(path: Path, skipped: int, first: str) -> None:
    if skipped:
        warnings.warn(
            f"skipped {skipped} image(s) in {path} that could not be decoded (first: {first})",
            stacklevel=5,  # the caller of load_dataset
        )
