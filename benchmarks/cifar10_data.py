"""The CIFAR-10 data every CIFAR-10 benchmark uses, and the manifest of the committed benchmark models.

The 50,000 training JPEGs (``../shared/datasets/cifar10-train-jpeg.tar.gz``) are unpacked once into a work
folder. Every 10th image of each class (by file name, 5,000 in all) goes to ``holdout/``, which no search,
selection or training sees; the other 45,000 form ``search/``, of which pdenas carves its own seeded
validation split (10 %). Final accuracies are measured on the held-out images.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tarfile
from pathlib import Path
from typing import Any

from pdenas.data import ImageData, load_dataset

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = ROOT.parent / "shared" / "datasets" / "cifar10-train-jpeg.tar.gz"
MODELS = ROOT / "benchmarks" / "models"
MANIFEST = MODELS / "MANIFEST.json"
VAL_FRACTION = 0.1  # the search's own validation split of search/ (search_spaces/cifar10-resnet.yaml)


def split_archive(archive: Path, work: Path) -> tuple[Path, Path]:
    """Unpack once; hard-link every 10th image of each class into holdout/, the rest into search/."""
    search, holdout = work / "data" / "search", work / "data" / "holdout"
    done = work / "data" / "split.json"
    if done.is_file():
        return search, holdout
    raw = work / "data" / "raw"
    shutil.rmtree(work / "data", ignore_errors=True)
    raw.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        tar.extractall(raw, filter="data")
    classes = [d for d in sorted(raw.rglob("*")) if d.is_dir() and any(f.suffix.lower() == ".jpg" for f in d.iterdir())]
    counts = {}
    for folder in classes:
        files = sorted(f for f in folder.iterdir() if f.suffix.lower() == ".jpg")
        for index, file in enumerate(files):
            target = (holdout if index % 10 == 0 else search) / folder.name / file.name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(file, target)
        counts[folder.name] = len(files)
    done.write_text(json.dumps({"archive": str(archive), "per_class": counts, "holdout": "every 10th file by name"}))
    return search, holdout


def search_data(search_dir: Path, *, subset: int | None = None, seed: int = 0) -> ImageData:
    """The search folder split as a search splits it (seeded, 10 % validation)."""
    return load_dataset(search_dir, seed=seed, val_fraction=VAL_FRACTION, subset=subset)


def holdout_view(search_dir: Path, holdout_dir: Path, *, subset: int | None = None) -> ImageData:
    """The search folder's data (its normalisation) with the held-out images as the validation split."""
    data = search_data(search_dir, subset=subset)
    held = load_dataset(holdout_dir, seed=0, val_fraction=0.0)
    return dataclasses.replace(data, val_x=held.train_x, val_y=held.train_y)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def record_model(entry: dict[str, Any]) -> None:
    """Add or replace (by ``file``) one model of ``benchmarks/models/MANIFEST.json``."""
    manifest = json.loads(MANIFEST.read_text()) if MANIFEST.is_file() else {"models": []}
    models = [m for m in manifest["models"] if m["file"] != entry["file"]]
    models.append(entry)
    models.sort(key=lambda m: (not m.get("original", False), -float(m.get("macs", 0)), m["file"]))
    manifest["models"] = models
    _save_manifest(manifest)


def forget_compressed_models() -> list[str]:
    """Remove every compressed model (not the original) from ``benchmarks/models/`` and its manifest: the
    models of an earlier run, which a new run replaces (they may come from another original)."""
    if not MANIFEST.is_file():
        return []
    manifest = json.loads(MANIFEST.read_text())
    gone = [m["file"] for m in manifest["models"] if not m.get("original", False)]
    for name in gone:
        (MODELS / name).unlink(missing_ok=True)
    manifest["models"] = [m for m in manifest["models"] if m.get("original", False)]
    _save_manifest(manifest)
    return gone


def _save_manifest(manifest: dict[str, Any]) -> None:
    MANIFEST.parent.mkdir(parents=True, exist_ok=True)
    MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n")
