"""A stage variant (what one stage of a candidate is) and the result of distilling it.

A variant is everything that decides the weights a stage-wise step produces: the stage, how many of
its blocks are kept, the Global layer put after them (or none: block dropping), the local recipe, and
what the original and its stage features were. Its :meth:`StageVariant.key` (a hash of its JSON) names
its entry in a :class:`~pdenas.distill.VariantStore`, so every trial and worker that needs the same
variant reuses one training (DONNA, Moons et al., ICCV 2021, builds its accuracy predictor the same
way: each block variant is distilled once and reused by every architecture that contains it).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from ..nn import GlobalLayerConfig
from ..surgery import StagePlan
from ._errors import DistillError
from ._fingerprint import json_fingerprint
from ._recipe import StageRecipe

__all__ = ["StageResult", "StageVariant"]


@dataclass(frozen=True)
class StageVariant:
    """One stage of a candidate, as the stage-wise step trains it.

    Attributes:
        stage: the stage's name (:attr:`pdenas.Stage.name`).
        keep: blocks kept, from the stage's first block.
        global_layer: the Global layer after the kept blocks, or None (block dropping).
        recipe: the local training.
        original: fingerprint of the original's weights (:func:`pdenas.distill.model_fingerprint`).
        features: fingerprint of the stage features it learns from (:attr:`StageFeatures.fingerprint`).
    """

    stage: str
    keep: int
    global_layer: GlobalLayerConfig | None
    recipe: StageRecipe
    original: str
    features: str

    def __post_init__(self) -> None:
        if isinstance(self.keep, bool) or not isinstance(self.keep, int) or self.keep < 1:
            raise DistillError(f"StageVariant: keep must be an integer >= 1, got {self.keep!r}")
        if self.global_layer is not None and not isinstance(self.global_layer, GlobalLayerConfig):
            raise DistillError(f"StageVariant: global_layer must be a GlobalLayerConfig or None, got {type(self.global_layer).__name__}")

    @property
    def stage_plan(self) -> StagePlan:
        return StagePlan(keep=self.keep, global_layer=self.global_layer)

    def describe(self) -> str:
        """``layer2: keep 1 + Global K=1 dt=0.2``."""
        return f"{self.stage}: {self.stage_plan.describe()}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "keep": self.keep,
            "global_layer": self.global_layer.to_dict() if self.global_layer is not None else None,
            "recipe": self.recipe.to_dict(),
            "original": self.original,
            "features": self.features,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageVariant:
        glob = data.get("global_layer")
        return cls(
            stage=data["stage"], keep=data["keep"],
            global_layer=GlobalLayerConfig.from_dict(glob) if glob is not None else None,
            recipe=StageRecipe.from_dict(data["recipe"]), original=data["original"], features=data["features"],
        )

    def key(self) -> str:
        """A file-name-safe key, readable and unique: ``layer2-keep1-global-<20 hex digits of the JSON's SHA-256>``."""
        stage = re.sub(r"[^A-Za-z0-9_.-]", "_", self.stage)
        kind = "global" if self.global_layer is not None else "blocks"
        return f"{stage}-keep{self.keep}-{kind}-{json_fingerprint(self.to_dict(), length=20)}"


@dataclass(frozen=True)
class StageResult:
    """What the stage-wise step gave for one variant.

    Losses are measured on the validation features (images the step never trained on), in eval mode
    after BatchNorm recalibration on the training features, in float32. ``loss`` is the MSE divided by
    the target's variance (:meth:`StageFeatures.target_variance`): 1.0 is as good as predicting each
    channel's mean, so losses compare across stages; ``mse`` is the raw figure.

    Attributes:
        variant: what was trained.
        loss, mse: after the step.
        initial_loss, initial_mse: the undistilled candidate stage (kept blocks with the original's
            weights, the Global layer at its init), measured the same way.
        train_loss: mean normalised training loss of the last epoch.
        train_time: seconds of the step (training and measuring); images: training feature maps per epoch;
            epochs; precision: what ran (fp32 or bf16).
        error: why the step failed (the loss diverged), or None.
        reused: True when the result was read from a store rather than trained by this call.
        state_dict: the stage's entries of the candidate's state dict (CPU tensors), under the
            candidate's own keys (``layer2.0.conv1.weight``, ``layer2.1.gate``, ...).
    """

    variant: StageVariant
    loss: float
    mse: float
    initial_loss: float
    initial_mse: float
    train_loss: float
    train_time: float
    images: int
    epochs: int
    precision: str
    error: str | None = None
    reused: bool = False
    state_dict: dict[str, Tensor] = field(default_factory=dict, repr=False, compare=False)

    @property
    def stage(self) -> str:
        return self.variant.stage

    @property
    def failed(self) -> bool:
        return self.error is not None

    def to_dict(self) -> dict[str, Any]:
        """The figures (no weights), JSON-friendly."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("state_dict", "variant")}
        return {"variant": self.variant.to_dict(), "key": self.variant.key(), **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, state_dict: dict[str, Tensor] | None = None, reused: bool = False) -> StageResult:
        names = {f.name for f in dataclasses.fields(cls)} - {"variant", "state_dict", "reused"}
        return cls(
            variant=StageVariant.from_dict(data["variant"]), reused=reused, state_dict=dict(state_dict or {}),
            **{name: data[name] for name in names if name in data},
        )
