"""What a trial does with its plan, and what ``pdenas export`` repeats: build the candidate from the
trained original, assemble it from distilled stages, recalibrate BatchNorm, fine-tune it with the
original as teacher, score it (issue 13, items 2-4).

1. **Stage-wise step** (``stagewise.enabled``, DNA / DONNA's block-wise distillation): the original's
   stage inputs and outputs are recorded once per study (``<study>/features``); every stage the plan
   changes, blocks only or with a Global layer, is a stage variant trained once to reproduce the
   original stage and kept in the study's variant store (``<study>/stages``), shared by every later
   trial and every worker on the machine (:mod:`pdenas.distill`). The candidate is the plan applied to
   the original with each changed stage's distilled weights loaded. Without the step, the plan is
   applied to the original as it is (new layers from their seeded initialisation).
2. **BatchNorm recalibration and a first score**: the assembled candidate's accuracy before any
   fine-tuning (``initial_accuracy``), what the stage-wise step alone achieved. Recalibrated on
   un-augmented images, the inputs its distilled stages learned from (fine-tuning's own recalibration, at
   its end, uses augmented ones, as its training did).
3. **Fine-tuning** end to end on the study's budget, with the original as teacher
   (``budget.distillation``), then the final score. A trial never scores below its assembled candidate:
   when fine-tuning lowers the validation accuracy (a short budget on few images can undo what the
   stage-wise step reached: on CIFAR-10, 82.8 % assembled fell to 77.2 % after 2 epochs on 5,000 images),
   the assembled weights are kept and the trial says so (``fine_tuning_discarded``), as keeping the best
   checkpoint would. With successive halving (``halving:``, see
   ``_halving``) the candidate is judged at each rung on the way (rung 0 by its step-2 accuracy, or by its
   summed stage losses before step 2) and training stops where it is not good enough.

The original model's own trial is different: without ``weights`` it is trained from the seeded
initialisation on the budget (every later candidate compresses what it trained); with ``weights`` it is
scored as it is, the honest reference for "how much accuracy does compression cost".
"""

from __future__ import annotations

import time
from pathlib import Path
from dataclasses import dataclass, replace
from typing import Callable, Protocol

import torch
from torch import nn

from ..distill import StageFeatures, StageResult, VariantStore, assemble, stage_features
from ..surgery import CompressionPlan
from ..train import TrainResult, evaluate, recalibrate_batchnorm, train_model
from ._context import SearchContext, build_base, build_candidate, candidate_seed, stage_macs
from ._record import StageRecord

__all__ = ["Candidate", "TrainedCandidate", "prepare_candidate", "train_candidate", "FEATURES_DIR", "STAGES_DIR"]

FEATURES_DIR = "features"  # in the study directory: the original's stage features
STAGES_DIR = "stages"  # in the study directory: the distilled stage variants

EpochCallback = Callable[[int, int, float], None]


@dataclass(frozen=True)
class Candidate:
    """A candidate before fine-tuning: the model, and per stage the variant it was assembled from
    (empty without the stage-wise step); ``stagewise_time``: seconds the step took in this call."""

    model: nn.Module
    stages: dict[str, StageRecord]
    stagewise_time: float | None = None


@dataclass(frozen=True)
class TrainedCandidate:
    """A candidate after the trial's training: the model, its training (``result.accuracy`` is the
    score), the accuracy before fine-tuning (None for the original's trial) and its stages.
    ``stopped``: successive halving stopped it at a rung (``result``: the training up to there, None
    when it stopped at the stage-wise rung, before fine-tuning)."""

    model: nn.Module
    result: TrainResult | None
    initial_accuracy: float | None
    stages: dict[str, StageRecord]
    stagewise_time: float | None
    stopped: bool = False
    fine_tuning_discarded: bool = False  # fine-tuning lowered the accuracy: the assembled weights were kept


class RungGate(Protocol):
    """Successive halving's side of a trial's training (``_halving.Rungs``)."""

    checkpoint: Path

    @property
    def stage_rung_pending(self) -> str | None: ...  # rung 0's score ahead: "accuracy", "loss", or None

    def pending(self) -> list[tuple[int, int]]: ...

    def decide(self, rung: int, images: int, *, accuracy: float | None = None, stage_loss: float | None = None) -> bool: ...


def prepare_candidate(ctx: SearchContext, plan: CompressionPlan) -> Candidate:
    """``plan`` applied to ``ctx.base_model``, each changed stage from its distilled variant when the
    stage-wise step is enabled (variants missing from the study's store are trained now and stored).

    Raises:
        DistillError: a variant's step diverged, or a stage cannot be distilled on its own.
    """
    config = ctx.config.stagewise
    if not config.enabled or plan.is_identity(ctx.stages):
        return Candidate(build_candidate(ctx, plan), {})
    start = time.perf_counter()
    features = _features(ctx)
    store = VariantStore(ctx.workspace / STAGES_DIR)
    with torch.random.fork_rng(devices=[]):  # compress draws new layers' weights; every changed stage is then loaded
        torch.manual_seed(candidate_seed(ctx.config.seed, plan))
        model, results = assemble(ctx.base_model, plan, features=features, store=store, recipe=config.recipe, device=ctx.device)
    stages = _stage_records(model, ctx, results)
    return Candidate(model, stages, time.perf_counter() - start)


def train_candidate(
    ctx: SearchContext, plan: CompressionPlan, *, reference: bool = False, on_epoch: EpochCallback | None = None,
    rungs: RungGate | None = None,
) -> TrainedCandidate:
    """The trial's training of ``plan`` (see the module docstring); ``reference``: the original's trial;
    ``rungs``: successive halving's rungs, judged on the way (training continues from, and stops into,
    ``rungs.checkpoint``)."""
    config, budget = ctx.config, ctx.config.budget
    if reference:
        return _train_original(ctx, plan, on_epoch)
    candidate = prepare_candidate(ctx, plan)
    stages = candidate.stages
    stage_rung = rungs.stage_rung_pending if rungs is not None and stages else None
    if stage_rung == "loss" and not rungs.decide(0, 0, stage_loss=float(sum(stage.loss for stage in stages.values()))):  # type: ignore[union-attr]
        return TrainedCandidate(candidate.model, None, None, stages, candidate.stagewise_time, stopped=True)
    # on un-augmented images: the distilled stages learned from the original's features of un-augmented images
    # (CIFAR-10 resnet32, assembled candidates at 2x / 4.6x fewer MACs: 56.4 / 29.2 % against 49.4 / 25.8 % with
    # augmented ones); fine-tuning, on augmented images, then recalibrates on augmented images
    recalibrate_batchnorm(candidate.model, ctx.data, batch_size=budget.batch_size, device=ctx.device, seed=config.seed,
                          augment=False)
    initial = evaluate(candidate.model, ctx.data, batch_size=max(budget.batch_size, 256), device=ctx.device)
    if stage_rung == "accuracy" and not rungs.decide(0, 0, accuracy=initial):  # type: ignore[union-attr]
        return TrainedCandidate(candidate.model, None, initial, stages, candidate.stagewise_time, stopped=True)
    assembled = {name: value.detach().clone() for name, value in candidate.model.state_dict().items()}
    teacher = ctx.base_model if budget.distillation > 0 else None
    checkpoint = None if rungs is None else rungs.checkpoint
    for rung, images in [] if rungs is None else rungs.pending():
        result = train_model(candidate.model, ctx.data, budget, seed=config.seed, device=ctx.device, teacher=teacher,
                             on_epoch=on_epoch, checkpoint=checkpoint, until_images=images)
        if not rungs.decide(rung, result.images or images, accuracy=result.accuracy):  # type: ignore[union-attr]
            return TrainedCandidate(candidate.model, result, initial, stages, candidate.stagewise_time, stopped=True)
    result = train_model(candidate.model, ctx.data, budget, seed=config.seed, device=ctx.device, teacher=teacher,
                         on_epoch=on_epoch, checkpoint=checkpoint)
    if checkpoint is not None:
        checkpoint.unlink(missing_ok=True)  # trained to the end: nothing will continue it
    if result.accuracy < initial:  # fine-tuning made it worse: keep what the assembly scored
        candidate.model.load_state_dict(assembled)
        return TrainedCandidate(candidate.model, replace(result, accuracy=initial), initial, stages, candidate.stagewise_time,
                                fine_tuning_discarded=True)
    return TrainedCandidate(candidate.model, result, initial, stages, candidate.stagewise_time)


def _train_original(ctx: SearchContext, plan: CompressionPlan, on_epoch: EpochCallback | None) -> TrainedCandidate:
    """The original's trial: the given weights scored as they are, or the model trained from its seeded
    initialisation (the one ``build_context`` made, even when this context already holds trial 0's result)."""
    config = ctx.config
    if config.weights is not None:
        model = build_candidate(ctx, plan)
        start = time.perf_counter()
        accuracy = evaluate(model, ctx.data, batch_size=max(config.budget.batch_size, 256), device=ctx.device)
        return TrainedCandidate(model, TrainResult(accuracy, 0.0, time.perf_counter() - start, 0, float("nan")), None, {}, None)
    if ctx.trained:  # this worker already compresses trial 0's result: start again from the initialisation
        ctx = replace(ctx, base_model=build_base(config, num_classes=ctx.num_classes, in_channels=ctx.input_size[0]))
    model = build_candidate(ctx, plan)
    result = train_model(model, ctx.data, config.budget, seed=config.seed, device=ctx.device, on_epoch=on_epoch)
    return TrainedCandidate(model, result, None, {}, None)


def _features(ctx: SearchContext) -> StageFeatures:
    """The original's stage features: computed by the first trial that needs them (in any worker; a file
    lock lets one compute while the others wait), then read from the study directory."""
    if ctx.features is None:
        config = ctx.config.stagewise
        ctx.features = stage_features(
            ctx.base_model, ctx.data, ctx.workspace / FEATURES_DIR, images=config.images, val_images=config.val_images,
            seed=ctx.config.seed, device=ctx.device,
        )
    return ctx.features


def _stage_records(model: nn.Module, ctx: SearchContext, results: dict[str, StageResult]) -> dict[str, StageRecord]:
    """Per distilled stage, what the trial records (its MACs as assembled, measured on ``model``)."""
    param = next(iter(model.parameters()))
    macs = stage_macs(model, [s for s in ctx.stages if s.name in results], torch.zeros(1, *ctx.input_size, device=param.device))
    records = {}
    for name, result in results.items():
        glob = result.variant.global_layer
        records[name] = StageRecord(
            key=result.variant.key(), keep=result.variant.keep, global_layer=None if glob is None else glob.to_dict(),
            loss=result.loss, mse=result.mse, initial_loss=result.initial_loss, reused=result.reused,
            train_time=result.train_time, macs=macs.get(name),
        )
    return records
