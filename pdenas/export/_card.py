"""What an exported model says about itself: how to feed it (:class:`Preprocessing`) and what its outputs
mean (:class:`ModelCard`: the class names, its costs, where it came from).

``pdenas export`` writes the card into every file it makes, as JSON under the key :data:`CARD_KEY`: the
checkpoint's metadata (``load_compressed(path).pdenas_metadata["model_card"]``), the ONNX file's
``metadata_props`` (onnxruntime: ``session.get_modelmeta().custom_metadata_map``), the TorchScript file's
extra files (``torch.jit.load(path, _extra_files=...)``) and the AOTInductor package's metadata
(``aoti_load_package(path).get_metadata()``). So a user runs the model without pdenas' data code::

    image = Image.open(path).convert(pre["color_mode"]).resize((W, H), Image.Resampling.BILINEAR)
    x = (np.asarray(image, np.float32).reshape(H, W, C) * pre["scale"] - pre["mean"]) / pre["std"]
    logits = session.run(None, {"input": x.transpose(2, 0, 1)[None].astype(np.float32)})[0]

which is what the training batches computed (:mod:`pdenas.data`: uint8 pixels / 255, normalised with
the training split's per-channel mean and std).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from ..cost import Cost, Latency
from ..data import ImageData
from ._errors import ExportError

__all__ = ["CARD_KEY", "CARD_VERSION", "ModelCard", "Preprocessing"]

CARD_KEY = "pdenas.model_card"  # the key of the card's JSON in every exported file
CARD_VERSION = 1
_MODES = {1: "L", 3: "RGB"}  # channels -> PIL's image mode
_LUMA = (19595, 38470, 7471)  # PIL's RGB -> L weights (ITU-R 601-2 luma, in 1/65536)


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the model's input, as the training batches made it.

    Attributes:
        input_size: (C, H, W) of one input; the batch is float32 (N, C, H, W), channels first.
        color_mode: PIL's image mode of the input: "RGB" (channels R, G, B) or "L" (one grayscale channel).
        scale: the uint8 pixel values (0..255) times ``scale`` (1/255) lie in [0, 1] ...
        mean, std: ... then each channel is (x - mean) / std (the training split's statistics).
        resize: how pdenas resized images of another size ("bilinear", antialiased: PIL's ``resize``).
    """

    input_size: tuple[int, int, int]
    color_mode: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: float = 1.0 / 255.0
    resize: str = "bilinear"

    @classmethod
    def from_data(cls, data: ImageData) -> "Preprocessing":
        """The preprocessing of the batches ``data`` gives (:meth:`ImageData.train_batches`)."""
        channels = data.input_size[0]
        if channels not in _MODES:
            raise ExportError(f"a model's input with {channels} channels has no image mode (1: L, 3: RGB)")
        return cls(input_size=data.input_size, color_mode=_MODES[channels], mean=tuple(data.mean), std=tuple(data.std))

    def prepare(self, images: Tensor) -> Tensor:
        """uint8 images (N, C', H', W') as the model's input, float32 (N, C, H, W): converted to
        ``color_mode`` (RGB to L with PIL's weights, L to RGB by repeating), resized to (H, W) when they
        differ (bilinear, antialiased), scaled and normalised."""
        channels, height, width = self.input_size
        x = _convert(images, channels)  # (N, C, H', W') uint8
        if tuple(x.shape[2:]) != (height, width):
            x = F.interpolate(x.float(), size=(height, width), mode="bilinear", antialias=True, align_corners=False)
            x = x.round_().clamp_(0, 255)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, channels, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).clamp_min(1e-6).view(1, channels, 1, 1)
        return (x.float() * self.scale - mean) / std  # (N, C, H, W)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "input_size": list(self.input_size), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Preprocessing":
        try:
            size = tuple(int(v) for v in data["input_size"])
            pre = cls(
                input_size=size,  # type: ignore[arg-type]
                color_mode=str(data["color_mode"]),
                mean=tuple(float(v) for v in data["mean"]),
                std=tuple(float(v) for v in data["std"]),
                scale=float(data.get("scale", 1.0 / 255.0)),
                resize=str(data.get("resize", "bilinear")),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ExportError(f"the model's preprocessing record is incomplete or malformed ({type(err).__name__}: {err})") from None
        if len(size) != 3 or len(pre.mean) != size[0] or len(pre.std) != size[0] or _MODES.get(size[0]) != pre.color_mode:
            raise ExportError(f"the model's preprocessing record does not add up: {pre}")
        return pre


@dataclass(frozen=True)
class ModelCard:
    """An exported model's own description, stored in each of its files (see the module docstring).

    Attributes:
        classes: class names, index = output.
        preprocessing: how to turn an image into the model's input.
        model: the uncompressed model's spec (zoo name, ``tv:NAME`` or ``package.module:factory``).
        cost: the model's params, MACs and conv MACs per image.
        dataset: the dataset it was trained on; ``accuracy``: on that dataset's validation split at export.
        latency: its latency as measured at export (runtime, batch size, threads, on the exporting machine).
    """

    classes: tuple[str, ...]
    preprocessing: Preprocessing
    model: str | None = None
    cost: Cost | None = None
    dataset: str | None = None
    accuracy: float | None = None
    latency: Latency | None = None
    version: int = CARD_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "classes": list(self.classes),
            "preprocessing": self.preprocessing.to_dict(),
            "model": self.model,
            "cost": None if self.cost is None else self.cost.to_dict(),
            "dataset": self.dataset,
            "accuracy": self.accuracy,
            "latency": None if self.latency is None else self.latency.to_dict(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelCard":
        if not isinstance(data, Mapping) or "preprocessing" not in data or "classes" not in data:
            raise ExportError("the model card is incomplete: it needs classes and preprocessing")
        version = data.get("version", CARD_VERSION)
        if version != CARD_VERSION:
            raise ExportError(f"the model card has version {version!r}; this pdenas reads {CARD_VERSION}: upgrade pdenas")
        try:
            cost, latency = data.get("cost"), data.get("latency")
            return cls(
                classes=tuple(str(c) for c in data["classes"]),
                preprocessing=Preprocessing.from_dict(data["preprocessing"]),
                model=None if data.get("model") is None else str(data["model"]),
                cost=None if cost is None else Cost(**{k: int(cost[k]) for k in ("params", "macs", "conv_macs")}),
                dataset=None if data.get("dataset") is None else str(data["dataset"]),
                accuracy=None if data.get("accuracy") is None else float(data["accuracy"]),
                latency=None if latency is None else Latency(**latency),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ExportError(f"the model card is malformed ({type(err).__name__}: {err})") from None

    @classmethod
    def from_json(cls, text: str | bytes) -> "ModelCard":
        try:
            data = json.loads(text)
        except ValueError as err:
            raise ExportError(f"the model card is not valid JSON ({err})") from None
        return cls.from_dict(data)

    def file_metadata(self) -> dict[str, str]:
        """What the ONNX, TorchScript and AOTInductor writers store (``metadata=``): the card's JSON."""
        return {CARD_KEY: self.to_json()}


def _convert(images: Tensor, channels: int) -> Tensor:
    """uint8 (N, C', H, W) to ``channels`` channels as PIL converts modes."""
    have = images.shape[1]
    if have == channels:
        return images
    if have == 3 and channels == 1:  # PIL's L = (R*19595 + G*38470 + B*7471 + 32768) >> 16: exact for grey RGB
        weights = torch.tensor(_LUMA, dtype=torch.int64).view(1, 3, 1, 1)
        return ((images.to(torch.int64) * weights).sum(1, keepdim=True) + 32768).div(65536, rounding_mode="floor").to(torch.uint8)
    if have == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1)
    raise ExportError(f"cannot turn {have}-channel images into the model's {channels} channels")
