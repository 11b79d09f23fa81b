"""What every worker process sets up once: the base model (with the user's weights, or as initialised
until trial 0 has trained it), its stages, the data, the original model's cost and the absolute
constraint limits; and each trial's candidate, built from it with weights that depend on the study's
seed and the plan only (so ``pdenas export`` rebuilds the very candidate the search trained)."""

from __future__ import annotations

import dataclasses
import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..cost import Cost, macs_by_module, profile
from .._model_spec import weights_normalization
from ..data import ImageData, load_dataset
from ..distill import StageFeatures
from ..surgery import CompressionPlan, Stage, build_model, compress, find_stages, load_weights
from ..train import resolve_device
from ._config import SearchConfig, SearchConfigError, check_halving
from ._study import StudyLocation
from ._suggest import select_stages

__all__ = ["SearchContext", "build_candidate", "build_context", "candidate_seed", "plan_key", "training_images"]


@dataclass
class SearchContext:
    config: SearchConfig
    base_model: nn.Module
    stages: list[Stage]  # the stages the search may touch
    data: object  # pdenas.data.ImageData
    device: torch.device
    input_size: tuple[int, int, int]
    num_classes: int
    original: Cost
    max_macs: float | None  # absolute limits
    max_params: float | None
    location: StudyLocation | None = None  # the study: its folder keeps the stage features, variants, original weights
    stage_macs: dict[str, int] = field(default_factory=dict)  # honest MACs per image of each searched stage, original
    trained: bool = False  # base_model holds the trained original (the given weights, or trial 0's once loaded)
    features: StageFeatures | None = None  # the original's stage features, once computed or found

    def example_input(self) -> torch.Tensor:
        return torch.zeros(2, *self.input_size)

    @property
    def workspace(self) -> Path:
        """The study directory (the stage features, the variant store and ``original.pt`` live there)."""
        if self.location is None:
            raise SearchConfigError("this search context has no study directory: build it with build_context(config, location=...)")
        return self.location.directory


def build_context(config: SearchConfig, *, location: StudyLocation | None = None) -> SearchContext:
    """Everything a worker needs once: the data, the base model (seeded), its stages and costs.

    ``location``: the study; its directory holds what trials share on disk (stage features, distilled
    stage variants, the original's trained weights)."""
    device = resolve_device(config.device)
    budget = config.budget
    data = normalized_as_the_original(_split(config, subset=budget.subset), config)
    num_classes = config.num_classes or data.num_classes
    input_size = tuple(data.input_size)
    model = build_base(config, num_classes=num_classes, in_channels=input_size[0])
    example = torch.zeros(2, *input_size)
    stages = select_stages(find_stages(model, example), config.space)
    original = profile(model, input_size)  # its latency: measured once, by its own trial (trial 0)
    max_macs = _absolute(config.constraints.max_macs, original.macs)
    max_params = _absolute(config.constraints.max_params, original.params)
    ctx = SearchContext(
        config, model, stages, data, device, input_size, num_classes, original, max_macs, max_params,
        location=location, stage_macs=stage_macs(model, stages, example), trained=config.weights is not None,
    )
    _check_budget_possible(ctx)
    check_halving(config, config.budget.epochs * len(data.train_y))
    return ctx


def _split(config: SearchConfig, *, subset: int | None) -> ImageData:
    """The study's data split (its seed and validation fraction), with ``subset`` training images (None: all)."""
    return load_dataset(config.dataset, seed=config.seed, val_fraction=config.budget.val_fraction, subset=subset,
                        image_size=config.image_size)


def training_images(ctx: SearchContext, subset: int | None) -> ImageData:
    """The study's training split with ``subset`` of its images (None: every one) instead of the search's
    ``budget.subset``, with ``ctx.data``'s validation split and normalisation (what a candidate was trained on
    and its model card says): the images of a candidate's further training (``pdenas export --subset``)."""
    data = _split(ctx.config, subset=subset)
    return dataclasses.replace(data, mean=ctx.data.mean, std=ctx.data.std)


def normalized_as_the_original(data: ImageData, config: SearchConfig) -> ImageData:
    """``data`` with the mean and std the original was trained with: ``normalize:``, else the model card of
    the ``weights`` checkpoint, else the training split's own (a model trained elsewhere on other statistics
    would otherwise see shifted inputs, and lose accuracy before any compression)."""
    if config.normalize is not None:
        stats, source = (tuple(config.normalize.mean), tuple(config.normalize.std)), "'normalize'"
    elif config.weights:
        stats, source = weights_normalization(config.weights), f"the model card of {config.weights}"
    else:
        stats = None
    if stats is None:
        return data
    channels = data.input_size[0]
    if len(stats[0]) != channels:
        raise SearchConfigError(f"{source} gives a mean and std for {len(stats[0])} channel(s), but the dataset's images "
                                f"have {channels}: give one per channel (normalize: {{mean: [...], std: [...]}})")
    return dataclasses.replace(data, mean=stats[0], std=stats[1])


def build_base(config: SearchConfig, *, num_classes: int, in_channels: int) -> nn.Module:
    """The model to compress as the study builds it: initialised from the study's seed, then the given
    ``weights`` loaded (without them, what trial 0 trains from)."""
    torch.manual_seed(config.seed)
    model = build_model(config.model, num_classes=num_classes, in_channels=in_channels)
    if config.weights:
        load_weights(model, config.weights)
    return model


def stage_macs(model: nn.Module, stages: list[Stage], example: torch.Tensor) -> dict[str, int]:
    """Honest MACs per image of each stage of ``model`` (its units' modules, as :class:`Stage` lists them)."""
    by_module = macs_by_module(model, example[:1])
    return {s.name: sum(by_module.get(path, 0) for block in s.block_paths for path in block) for s in stages}


def plan_key(plan: CompressionPlan | dict[str, Any]) -> str:
    """A plan as text: equal for equal plans (what the search compares to reuse a trained result)."""
    data = plan.to_dict() if isinstance(plan, CompressionPlan) else plan
    return json.dumps(data, sort_keys=True)


def candidate_seed(seed: int, plan: CompressionPlan) -> int:
    """The seed of a candidate's new weights (its Global layers): the study's seed and the plan, nothing else."""
    return zlib.crc32(f"{seed}:{plan_key(plan)}".encode())


def build_candidate(ctx: SearchContext, plan: CompressionPlan) -> nn.Module:
    """``plan`` applied to the base model, its new weights drawn from :func:`candidate_seed`: the same
    weights whichever trials ran before it, in the search and in the export (the global random state is
    left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(candidate_seed(ctx.config.seed, plan))
        return compress(ctx.base_model, plan, ctx.example_input())


def _absolute(limit: float | None, original: int) -> float | None:
    if limit is None:
        return None
    return limit * original if limit <= 1 else limit


def _check_budget_possible(ctx: SearchContext) -> None:
    """Refuse a constraint that no plan in the space can meet (the smallest plan is measured)."""
    if ctx.max_macs is None and ctx.max_params is None:
        return
    from ..surgery import StagePlan

    low = ctx.config.space.keep.low
    smallest = CompressionPlan(stages={s.name: StagePlan(keep=min(low, s.m), global_layer=None) for s in ctx.stages})
    cost = profile(compress(ctx.base_model, smallest, ctx.example_input()), ctx.input_size)
    for name, limit, value in (("max_macs", ctx.max_macs, cost.macs), ("max_params", ctx.max_params, cost.params)):
        if limit is not None and value > limit:
            raise SearchConfigError(
                f"'constraints.{name}' = {limit:,.0f} is impossible: the smallest plan in the space still costs "
                f"{value:,} (the original {getattr(ctx.original, name[4:]):,}); raise the limit or lower space.keep"
            )
