"""Assembling a candidate from distilled stages (issue 13, item 3; DONNA, Moons et al., ICCV 2021:
"the architecture is built from the block-wise distilled blocks, then fine-tuned").

``assemble`` applies a plan to the original (:func:`pdenas.compress`) and loads, stage by stage, the
weights that the stage-wise step gave each changed stage, training the variants the store lacks. Stages
that only drop blocks (no Global layer) get the same treatment, so that block dropping and Global
layers are compared after the same step. Stages the plan leaves untouched keep the original's weights.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..surgery import CompressionPlan, compress
from ._distill import make_variant
from ._errors import DistillError, FeaturesError
from ._features import StageFeatures
from ._fingerprint import model_fingerprint
from ._recipe import StageRecipe
from ._stage_module import stage_state
from ._store import VariantStore
from ._variant import StageResult

__all__ = ["Assembly", "assemble"]


class Assembly(NamedTuple):
    """A candidate built from distilled stages: ``model, stages = assemble(...)``."""

    model: nn.Module  # the compressed candidate, in the base model's train/eval mode, on its device
    stages: dict[str, StageResult]  # per changed stage, in forward order (weights included)


def assemble(
    base: nn.Module,
    plan: CompressionPlan,
    *,
    features: StageFeatures,
    store: VariantStore,
    recipe: StageRecipe | None = None,
    device: str | torch.device = "auto",
) -> Assembly:
    """The candidate ``compress(base, plan)`` with each changed stage's distilled weights loaded.

    Args:
        base: the trained original (the model ``features`` were computed from); not modified.
        plan: what to keep and insert per stage.
        features: the original's stage features (:func:`stage_features`).
        store: where distilled variants are kept and found.
        recipe: the local training of variants not yet in the store (the default :class:`StageRecipe`).
        device: where missing variants train.

    Raises:
        FeaturesError: ``features`` were computed from other weights.
        StageNotComposableError: a changed stage cannot be distilled on its own.
        DistillError: a variant's stage-wise step failed (its loss diverged).
        PlanError: the plan does not fit the model.
    """
    if model_fingerprint(base) != features.model_fingerprint:
        raise FeaturesError(
            f"the stage features in {features.folder} were computed from other weights than this model: "
            "recompute them with stage_features(model, data, folder)"
        )
    first = next(iter(base.parameters()), None)
    example = torch.zeros(1, *features.input_size, device=first.device if first is not None else "cpu")
    candidate = compress(base, plan, example)
    results: dict[str, StageResult] = {}
    for stage in features.stages:
        stage_plan = plan.stages.get(stage.name)
        if stage_plan is None or stage_plan.is_untouched(stage.m):
            continue
        variant = make_variant(stage.name, stage_plan.keep, stage_plan.global_layer, features=features, recipe=recipe)
        result = store.get_or_distill(base, variant, features, device=device)
        if result.failed:
            raise DistillError(f"the stage-wise step of {variant.describe()} failed: {result.error}")
        _load_stage(candidate, stage.name, result, stage_state(candidate, stage))
        results[stage.name] = result
    return Assembly(candidate, results)


def _load_stage(candidate: nn.Module, stage: str, result: StageResult, own: dict[str, torch.Tensor]) -> None:
    """Copy the variant's weights into the candidate's stage; the keys must be exactly the stage's."""
    if set(own) != set(result.state_dict):
        missing = sorted(set(own) - set(result.state_dict))[:3]
        extra = sorted(set(result.state_dict) - set(own))[:3]
        raise DistillError(
            f"stored weights of stage {stage!r} do not fit the candidate (missing {missing}, unexpected {extra}): "
            "delete the store entry to retrain it"
        )
    candidate.load_state_dict(result.state_dict, strict=False)
