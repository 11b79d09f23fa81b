"""The original network's stage features, computed once and kept on disk (issue 13, item 2).

Block-wise distillation (DNA, Li et al., CVPR 2020; DONNA, Moons et al., ICCV 2021) trains each
replacement on the original network's own input to that part and its output there. Here a part is a
stage (:func:`pdenas.surgery.find_stages`): for a fixed, seeded set of training images (and a few
validation images, on which stage losses are measured) the original's input to the stage's first block
and the output of its last block are recorded once, in float16 ``.npy`` files read back through
``numpy`` memory maps one batch at a time, so memory stays bounded whatever the number of images.

Folder layout::

    manifest.json                 # what the features were computed from; written last
    00.train.in.npy  00.train.out.npy  00.val.in.npy  00.val.out.npy    # stage 0: (N, C, H, W) float16
    01.train.in.npy  ...

``manifest.json`` records the original's weights fingerprint, the selected images' fingerprint, the
seed and the counts; :func:`stage_features` recomputes when any differs or a file is missing, and a
crash while computing leaves no manifest, so a partial folder is never read. Several processes may
ask at once: a file lock lets one compute while the others wait, then read.

Augmentation: none. The features are a fixed set reused every epoch, so one random crop per image adds
no variety between epochs; it only moves the inputs away from the un-augmented images on which the
candidate is scored and its BatchNorms recalibrated. For more variety, record more images.

Each stage is also checked: its blocks run one after the other on the recorded input must give the
recorded output (in a model whose forward does more between blocks, e.g. ``F.relu(block(x))``, they do
not). Stages that fail are marked, and stage-wise distillation refuses them instead of training on
targets that the stage does not compute.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock
from torch import Tensor, nn

from .._util import atomic_write_text, first_line, preserved_modes
from ..data import ImageData, iterate_batches
from ..surgery import NoStagesError, Stage, find_stages
from ..train import resolve_device
from ._errors import FeaturesError, StageNotComposableError
from ._fingerprint import json_fingerprint, model_fingerprint, tensor_digest

__all__ = ["SPLITS", "StageFeatures", "stage_features"]

FORMAT = "pdenas.stage-features"
FORMAT_VERSION = 1
SPLITS = ("train", "val")
_COMPOSE_TOLERANCE = 1e-4  # relative: the same modules on the same input agree to float32 rounding


def stage_features(
    model: nn.Module,
    data: ImageData,
    folder: str | Path,
    *,
    images: int = 10_000,
    val_images: int = 1_000,
    seed: int = 0,
    batch_size: int = 256,
    device: str | torch.device = "auto",
) -> StageFeatures:
    """The stage features of ``model`` (the trained original) in ``folder``, computed if missing or stale.

    Args:
        model: the original network; it is not modified (eval mode during the pass, flags restored).
        data: its training data; ``images`` training images are drawn with ``seed`` (all when fewer),
            and ``val_images`` validation images, on which stage losses are measured.
        folder: where the features live (created); a valid cache there is reused as is.
        batch_size: images per forward pass while computing.
        device: where the original runs (``auto``: CUDA when present).

    Raises:
        FeaturesError: bad arguments, or the model fails on the data.
        NoStagesError: the model has no stage.
    """
    for name, value, low in (("images", images, 1), ("val_images", val_images, 1), ("batch_size", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise FeaturesError(f"{name} must be an integer >= {low}, got {value!r}")
    folder = Path(folder)
    selection = _select(data, images=images, val_images=val_images, seed=seed)
    identity = {
        "format_version": FORMAT_VERSION,
        "model": model_fingerprint(model),
        "data": selection.fingerprint,
        "seed": seed,
        "images": {split: len(index) for split, index in selection.index.items()},
    }
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(folder / ".lock"):
        manifest = _read_manifest(folder)
        if manifest is not None and manifest.get("identity") == identity and _complete(folder, manifest):
            return StageFeatures(folder, manifest, computed=False)
        (folder / "manifest.json").unlink(missing_ok=True)  # stale: never readable while being replaced
        manifest = _compute(model, data, selection, folder, identity, batch_size, resolve_device(device))
        atomic_write_text(folder / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return StageFeatures(folder, manifest, computed=True)


@dataclass(frozen=True)
class StageFeatures:
    """Recorded stage inputs and outputs of the original network (see :func:`stage_features`).

    Attributes:
        folder: where they live.
        manifest: the parsed ``manifest.json``.
        computed: True when the call that returned this object computed them, False when it reused them.
    """

    folder: Path
    manifest: dict[str, Any]
    computed: bool = False

    @classmethod
    def open(cls, folder: str | Path) -> StageFeatures:
        """Features already computed in ``folder`` (by :func:`stage_features`, maybe in another process)."""
        folder = Path(folder)
        manifest = _read_manifest(folder)
        if manifest is None or not _complete(folder, manifest):
            raise FeaturesError(f"no complete stage features in {folder}: compute them with stage_features(model, data, folder)")
        return cls(folder, manifest, computed=False)

    @property
    def fingerprint(self) -> str:
        """Identity of these features: the original's weights, the images, the seed and the counts."""
        return json_fingerprint(self.manifest["identity"])

    @property
    def model_fingerprint(self) -> str:
        return str(self.manifest["identity"]["model"])

    @property
    def input_size(self) -> tuple[int, int, int]:
        """(C, H, W) of one input image of the original."""
        c, h, w = self.manifest["input_size"]
        return (int(c), int(h), int(w))

    @property
    def stages(self) -> list[Stage]:
        return [Stage.from_dict(entry["stage"]) for entry in self.manifest["stages"]]

    def stage(self, name: str) -> Stage:
        return Stage.from_dict(self._entry(name)["stage"])

    def count(self, split: str = "train") -> int:
        """Images recorded for ``split`` (``train`` or ``val``)."""
        _check_split(split)
        return int(self.manifest["identity"]["images"][split])

    def target_variance(self, name: str) -> float:
        """Mean over channels of the variance of the stage's output on the training features: the MSE of
        predicting each channel's mean, by which stage losses are normalised so that stages compare."""
        return float(self._entry(name)["target_variance"])

    def composable(self, name: str) -> bool:
        return bool(self._entry(name)["composable"])

    def require_composable(self, name: str) -> None:
        """Raise :class:`StageNotComposableError` if the stage's blocks do not reproduce its output."""
        entry = self._entry(name)
        if not entry["composable"]:
            raise StageNotComposableError(
                f"stage {name!r}: running its blocks one after the other does not reproduce the stage's output "
                f"in the original (relative error {entry['compose_error']:.3g}; its forward does more between the "
                "blocks), so stage-wise distillation would train on wrong targets: train this stage end to end"
            )

    def batches(
        self,
        name: str,
        *,
        split: str = "train",
        batch_size: int = 64,
        shuffle: bool = False,
        seed: int = 0,
        device: str | torch.device = "cpu",
        limit: int | None = None,
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield ``(input, target)`` float32 (B, C, H, W) batches of stage ``name``, read from disk one batch
        at a time (memory: one batch, whatever the number of images). ``shuffle`` draws the order from
        ``seed``; ``limit`` stops after that many images."""
        entry = self._entry(name)
        _check_split(split)
        inputs = np.load(self.folder / entry["files"][split]["in"], mmap_mode="r")  # (N, C, H, W) float16 on disk
        targets = np.load(self.folder / entry["files"][split]["out"], mmap_mode="r")
        n = inputs.shape[0] if limit is None else min(limit, inputs.shape[0])
        order = torch.randperm(inputs.shape[0], generator=torch.Generator().manual_seed(seed))[:n] if shuffle else torch.arange(n)
        device = torch.device(device)
        for start in range(0, n, batch_size):
            index = np.sort(order[start : start + batch_size].numpy())  # sorted: sequential reads; order in a batch is free
            yield _to_device(inputs[index], device), _to_device(targets[index], device)

    def _entry(self, name: str) -> dict[str, Any]:
        for entry in self.manifest["stages"]:
            if entry["stage"]["name"] == name:
                return entry
        known = ", ".join(e["stage"]["name"] for e in self.manifest["stages"])
        raise FeaturesError(f"the stage features have no stage {name!r}; their stages are: {known}")


# --- selecting the images ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Selection:
    index: dict[str, Tensor]  # split -> (N,) int64 positions in data.train_x / data.val_x
    fingerprint: str


def _select(data: ImageData, *, images: int, val_images: int, seed: int) -> _Selection:
    """A seeded random choice of training and validation images, and the fingerprint of their pixels."""
    generator = torch.Generator().manual_seed(seed)
    index = {
        "train": torch.randperm(len(data.train_y), generator=generator)[:images],
        "val": torch.randperm(len(data.val_y), generator=generator)[:val_images],  # a validation split may be sorted by class
    }
    if len(index["train"]) == 0 or len(index["val"]) == 0:
        raise FeaturesError(
            "stage features need training images and validation images (stage losses are measured on the latter): "
            f"the data has {len(data.train_y)} and {len(data.val_y)}"
        )
    digest = hashlib.sha256(json.dumps({"mean": list(data.mean), "std": list(data.std)}).encode())
    for split, source in (("train", data.train_x), ("val", data.val_x)):
        digest.update(split.encode())
        tensor_digest(source.index_select(0, index[split]), digest)
    return _Selection(index, digest.hexdigest())


# --- computing --------------------------------------------------------------------------------------


def _compute(
    model: nn.Module, data: ImageData, selection: _Selection, folder: Path, identity: dict[str, Any],
    batch_size: int, device: torch.device,
) -> dict[str, Any]:
    start = time.perf_counter()
    input_size = data.input_size
    first = next(iter(model.parameters()), None)
    original_device = first.device if first is not None else torch.device("cpu")
    model.to(device)
    try:
        stages = find_stages(model, torch.zeros(1, *input_size, device=device), macs=False)
        recorder = _Recorder(model, stages)
        entries = [{"stage": s.to_dict(), "files": {}} for s in stages]
        with preserved_modes(model, False), torch.no_grad(), recorder:
            for split, source_x, source_y in (("train", data.train_x, data.train_y), ("val", data.val_x, data.val_y)):
                index = selection.index[split]
                _record_split(model, recorder, entries, folder, split, source_x.index_select(0, index),
                              source_y.index_select(0, index), data, batch_size, device)
    except (NoStagesError, FeaturesError):
        raise
    except RuntimeError as err:
        raise FeaturesError(f"the original failed while computing stage features: {first_line(err)}") from None
    finally:
        model.to(original_device)
    return {
        "format": FORMAT,
        "identity": identity,
        "input_size": list(input_size),
        "dtype": "float16",
        "data": {"name": data.name, "source": data.source},
        "stages": entries,
        "seconds": round(time.perf_counter() - start, 3),
    }


class _Recorder:
    """Forward hooks that copy each stage's input (first block's first child) and output (last block's
    last child) as they pass; copies, because later in-place operations may overwrite the tensors."""

    def __init__(self, model: nn.Module, stages: Sequence[Stage]) -> None:
        self.model, self.stages = model, list(stages)
        self.inputs: list[Tensor | None] = [None] * len(stages)
        self.outputs: list[Tensor | None] = [None] * len(stages)
        self.handles: list[Any] = []
        self.active = True

    def __enter__(self) -> _Recorder:
        for i, stage in enumerate(self.stages):
            head = self.model.get_submodule(stage.block_paths[0][0])
            tail = self.model.get_submodule(stage.block_paths[-1][-1])
            self.handles.append(head.register_forward_pre_hook(self._pre_hook(i)))
            self.handles.append(tail.register_forward_hook(self._hook(i)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()

    def _pre_hook(self, i: int) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            if self.active:
                self.inputs[i] = args[0].detach().float().clone()  # (B, C, H, W)
        return hook

    def _hook(self, i: int) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Tensor) -> None:
            if self.active:
                self.outputs[i] = output.detach().float().clone()  # (B, C, H, W)
        return hook


def _record_split(
    model: nn.Module, recorder: _Recorder, entries: list[dict[str, Any]], folder: Path, split: str,
    x: Tensor, y: Tensor, data: ImageData, batch_size: int, device: torch.device,
) -> None:
    n = x.shape[0]
    arrays: dict[tuple[int, str], np.memmap] = {}
    sums = [np.zeros(0)] * len(entries)
    squares = [np.zeros(0)] * len(entries)
    start = 0
    for xb, _ in iterate_batches(x, y, batch_size=batch_size, mean=data.mean, std=data.std, device=device):
        model(xb)  # (B, C, H, W) -> the hooks record each stage
        if start == 0 and split == "train":
            _check_composition(model, recorder, entries)
        for i, entry in enumerate(entries):
            for kind, tensor in (("in", recorder.inputs[i]), ("out", recorder.outputs[i])):
                if tensor is None:
                    raise FeaturesError(f"stage {entry['stage']['name']!r} was not run by the model's forward")
                half = tensor.to(device="cpu", dtype=torch.float16).contiguous()  # (B, C, H, W)
                if not bool(torch.isfinite(half).all()):
                    raise FeaturesError(
                        f"stage {entry['stage']['name']!r}: its {kind}put does not fit float16 (|x| > 65504 or not finite)"
                    )
                if (i, kind) not in arrays:
                    name = f"{i:02d}.{split}.{kind}.npy"
                    entry["files"].setdefault(split, {})[kind] = name
                    entry[f"{kind}put_shape"] = list(half.shape[1:])
                    arrays[i, kind] = np.lib.format.open_memmap(  # a new file: readers of the old one keep theirs
                        folder / f".{name}.tmp", mode="w+", dtype=np.float16, shape=(n, *half.shape[1:]))
                arrays[i, kind][start : start + half.shape[0]] = half.numpy()
            if split == "train":
                out = recorder.outputs[i].to(device="cpu", dtype=torch.float16).double()  # as stored
                s, q = out.sum(dim=(0, 2, 3)).numpy(), out.square().sum(dim=(0, 2, 3)).numpy()  # (C,)
                sums[i] = s if start == 0 else sums[i] + s
                squares[i] = q if start == 0 else squares[i] + q
        start += xb.shape[0]
    for (i, kind), array in arrays.items():
        array.flush()
        name = entries[i]["files"][split][kind]
        os.replace(folder / f".{name}.tmp", folder / name)
    if split == "train":
        for i, entry in enumerate(entries):
            count = n * entry["output_shape"][1] * entry["output_shape"][2]  # values per channel
            variance = squares[i] / count - (sums[i] / count) ** 2  # (C,)
            entry["target_variance"] = float(max(np.mean(variance), 1e-12))


def _check_composition(model: nn.Module, recorder: _Recorder, entries: list[dict[str, Any]]) -> None:
    """Run each stage's units one after the other on its recorded input; compare with its recorded output."""
    recorder.active = False
    try:
        for i, (stage, entry) in enumerate(zip(recorder.stages, entries)):
            x = recorder.inputs[i]
            for block in stage.block_paths:
                for path in block:
                    x = model.get_submodule(path)(x)  # (B, C, H, W)
            target = recorder.outputs[i]
            error = float((x.float() - target).abs().max() / target.abs().max().clamp_min(1e-12))
            entry["composable"] = error <= _COMPOSE_TOLERANCE
            entry["compose_error"] = error
    finally:
        recorder.active = True


def _to_device(array: np.ndarray, device: torch.device) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).to(device=device, dtype=torch.float32)


# --- reading ----------------------------------------------------------------------------------------


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / "manifest.json"
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None  # unreadable: recompute
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return None
    return manifest


def _complete(folder: Path, manifest: dict[str, Any]) -> bool:
    """Every file the manifest names exists with the shape it says."""
    try:
        identity = manifest["identity"]
        for entry in manifest["stages"]:
            for split in SPLITS:
                for kind in ("in", "out"):
                    header = _npy_shape(folder / entry["files"][split][kind])
                    if header != (identity["images"][split], *entry[f"{kind}put_shape"]):
                        return False
    except (KeyError, TypeError, OSError, ValueError):
        return False
    return True


def _npy_shape(path: Path) -> tuple[int, ...]:
    array = np.load(path, mmap_mode="r")  # maps the file: reads the header, not the data
    if array.dtype != np.float16:
        raise ValueError(f"{path} is {array.dtype}, not float16")
    return tuple(array.shape)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise FeaturesError(f"split must be 'train' or 'val', got {split!r}")
