"""Opening an exported model, whatever its format, with its model card: a pdenas checkpoint
(``model.pt``, :func:`pdenas.load_compressed`), an ONNX file (run with onnxruntime), a TorchScript file
(``torch.jit.load``) or an AOTInductor package (``.pt2``).

The format is told from the file's content, not only its name: ONNX files are protobuf, the three others
zip archives (a TorchScript archive holds ``code/``, an AOTInductor package ``archive_format`` = pt2, a
checkpoint only ``data.pkl`` and tensors).
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._util import first_line
from ..surgery import CheckpointError, load_compressed
from ._card import CARD_KEY, ModelCard
from ._errors import ExportError
from ._formats import aoti_runner, onnx_session, quiet

__all__ = ["KIND_RUNTIME", "LoadedModel", "load_exported", "model_kind"]

# each format and the runtime its file runs in (a checkpoint is an nn.Module: eager PyTorch)
KIND_RUNTIME = {"checkpoint": "torch", "onnx": "onnxruntime", "torchscript": "torchscript", "aoti": "aoti"}
_WHAT = "a pdenas checkpoint (model.pt), model.onnx, model.torchscript.pt or an AOTInductor .pt2 package"


@dataclass(frozen=True)
class LoadedModel:
    """An exported model ready to run: ``run`` takes a float32 CPU batch (N, C, H, W) and returns the logits
    (N, classes) as a tensor; ``module`` is the checkpoint's model (None for the other formats)."""

    path: Path
    kind: str  # "checkpoint", "onnx", "torchscript" or "aoti"
    card: ModelCard
    run: Callable[[Tensor], Tensor]
    module: nn.Module | None = None

    @property
    def runtime(self) -> str:
        return KIND_RUNTIME[self.kind]


def model_kind(path: str | Path) -> str:
    """The format of the file ``path`` (a key of :data:`KIND_RUNTIME`); :class:`ExportError` when it is missing
    or none of them."""
    path = Path(path)
    if not path.exists():
        raise ExportError(f"no model at {path}: pass {_WHAT}")
    if not path.is_file():
        raise ExportError(f"{path} is a folder, not a model: pass {_WHAT}")
    if not zipfile.is_zipfile(path):
        return "onnx"  # protobuf; anything else fails to load with "not a model"
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            formats = [n for n in names if n.endswith("/archive_format")]
            if formats and archive.read(formats[0]).strip() == b"pt2":
                return "aoti"
    except (zipfile.BadZipFile, OSError) as err:
        raise ExportError(f"{path} is not a model ({first_line(err)}): pass {_WHAT}") from None
    if any("/code/" in n for n in names) or any(n.endswith("/constants.pkl") for n in names):
        return "torchscript"
    return "checkpoint"


def load_exported(path: str | Path, *, threads: int | None = None) -> LoadedModel:
    """Open ``path`` in its runtime (onnxruntime with ``threads`` intra-op threads) with its model card.

    Raises:
        ExportError: a missing file, a file that is no model, a model without a pdenas model card
            (not written by ``pdenas export``), or a runtime that is not installed.
    """
    path = Path(path)
    kind = model_kind(path)
    opener = {"checkpoint": _checkpoint, "onnx": _onnx, "torchscript": _torchscript, "aoti": _aoti}[kind]
    return opener(path, threads)


def _checkpoint(path: Path, threads: int | None) -> LoadedModel:
    try:
        model = load_compressed(path)
    except CheckpointError as err:
        raise ExportError(f"{path} is not a model: {err}") from None
    card = getattr(model, "pdenas_metadata", {}).get("model_card")
    if card is None:
        raise ExportError(f"{path} has no model card (exported by an older pdenas): it does not say how to feed it; "
                          "export the trial again with pdenas export")

    def run(x: Tensor) -> Tensor:
        with torch.no_grad():
            return model(x)

    return LoadedModel(path, "checkpoint", ModelCard.from_dict(card), run, model)


def _onnx(path: Path, threads: int | None) -> LoadedModel:
    try:
        import onnxruntime  # type: ignore[import-untyped,unused-ignore]  # noqa: F401
    except ImportError:
        raise ExportError(f"{path} is an ONNX file, which runs in onnxruntime, and onnxruntime is not installed: "
                          "pip install 'pdenas[onnx]'") from None
    try:
        session = onnx_session(path, threads=threads)
    except Exception as err:  # noqa: BLE001 - onnxruntime's InvalidProtobuf, Fail, ...
        raise ExportError(f"{path} is not a model onnxruntime can load ({first_line(err, limit=200)}): pass {_WHAT}") from None
    card = session.get_modelmeta().custom_metadata_map.get(CARD_KEY)
    name = session.get_inputs()[0].name

    def run(x: Tensor) -> Tensor:
        return torch.from_numpy(session.run(None, {name: x.numpy()})[0])

    return LoadedModel(path, "onnx", _card(card, path), run)


def _torchscript(path: Path, threads: int | None) -> LoadedModel:
    extra = {CARD_KEY: ""}
    try:
        with quiet():
            scripted = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as err:  # noqa: BLE001
        raise ExportError(f"{path} is not a TorchScript model ({first_line(err, limit=200)}): pass {_WHAT}") from None

    def run(x: Tensor) -> Tensor:
        with torch.no_grad():
            return scripted(x)

    return LoadedModel(path, "torchscript", _card(extra[CARD_KEY], path), run)


def _aoti(path: Path, threads: int | None) -> LoadedModel:
    compiled: Any = aoti_runner(path)

    def run(x: Tensor) -> Tensor:
        with torch.no_grad():
            return compiled(x)

    return LoadedModel(path, "aoti", _card(compiled.get_metadata().get(CARD_KEY), path), run)


def _card(text: str | bytes | None, path: Path) -> ModelCard:
    if not text:
        raise ExportError(f"{path} has no pdenas model card ({CARD_KEY}): it was not written by pdenas export, "
                          "so it does not say how to feed it")
    return ModelCard.from_json(text)
