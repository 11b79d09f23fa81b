"""The stage-wise step: train one compressed stage to reproduce the original stage (block-wise
distillation: DNA, Li et al., CVPR 2020, Eq. 2; DONNA, Moons et al., ICCV 2021).

For a stage variant the candidate's stage (kept blocks with the original's weights, the Global layer
from its init, identities) learns to map the original's recorded stage input X to its recorded output
Y, minimising the normalised MSE

    L = ||S(X) - Y||^2 / (numel(Y) * Var(Y)),        Var(Y): mean per-channel variance of Y,

so that 1.0 means "as good as each channel's mean" in every stage. Only the stage runs; the rest of
the network is untouched. BatchNorm statistics are recomputed on the training features before the
losses are measured (torch's ``update_bn``), and losses are measured on the validation features.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import lr_scheduler

from .._memory_format import training_layout
from .._util import first_line, preserved_modes
from ..surgery import CompressionPlan, compress
from ..train import TrainingDiverged, bf16_supported, resolve_device
from ._errors import DistillError, FeaturesError
from ._features import StageFeatures
from ._fingerprint import model_fingerprint
from ._recipe import StageRecipe
from ._stage_module import StageModule, stage_state
from ._variant import StageResult, StageVariant

__all__ = ["distill_stage", "make_variant", "stage_loss"]

_RECALIBRATION_IMAGES = 2048


def make_variant(stage: str, keep: int, global_layer: Any, *, features: StageFeatures, recipe: StageRecipe | None = None) -> StageVariant:
    """The variant of stage ``stage`` keeping ``keep`` blocks with ``global_layer`` (a GlobalLayerConfig
    or None), learning from ``features`` with ``recipe`` (the default :class:`StageRecipe` when None)."""
    features.stage(stage)  # a one-line error for an unknown stage
    return StageVariant(
        stage=stage, keep=keep, global_layer=global_layer, recipe=recipe if recipe is not None else StageRecipe(),
        original=features.model_fingerprint, features=features.fingerprint,
    )


def distill_stage(
    original: nn.Module,
    variant: StageVariant,
    features: StageFeatures,
    *,
    device: str | torch.device = "auto",
) -> StageResult:
    """Train ``variant``'s stage on ``features`` of ``original`` and return the result with its weights.

    ``original`` is not modified. A loss that turns non-finite (a Global layer whose dt is too large)
    ends the step with a result whose ``error`` says so, rather than an exception: the failure is a
    property of the variant, and a store keeps it so that nobody retrains it to fail again.

    Raises:
        FeaturesError: the features were computed from other weights, or lack the stage.
        StageNotComposableError: the stage's blocks do not reproduce its output in the original.
        PlanError: ``keep`` is out of range for the stage.
    """
    stage = features.stage(variant.stage)
    features.require_composable(stage.name)
    if variant.features != features.fingerprint:
        raise FeaturesError(f"variant {variant.describe()} was made for other stage features than those in {features.folder}")
    if model_fingerprint(original) != features.model_fingerprint:
        raise FeaturesError(
            f"the stage features in {features.folder} were computed from other weights than this original: "
            "recompute them with stage_features(original, data, folder)"
        )
    device = resolve_device(device)
    recipe = variant.recipe
    precision = "bf16" if recipe.precision == "bf16" or (recipe.precision == "auto" and bf16_supported(device)) else "fp32"
    start = time.perf_counter()
    with _seeded(recipe.seed, device):  # the new layers' weights depend on the variant only, not on the caller's RNG
        candidate = compress(original, CompressionPlan({stage.name: variant.stage_plan}), _example(original, features))
    student = StageModule(candidate, stage).to(device=device)
    variance = features.target_variance(stage.name)

    initial_mse = train_loss = float("nan")
    error = None
    try:
        _recalibrate(student, features, stage.name, recipe, device)
        initial_mse = stage_loss(student, features, stage.name, device=device)
        with training_layout(student, channels_last=recipe.channels_last, device=device) as memory_format:
            train_loss = _train(student, features, stage.name, recipe, variance, device, precision, memory_format)
        _recalibrate(student, features, stage.name, recipe, device)
        mse = stage_loss(student, features, stage.name, device=device)
        if not torch.isfinite(torch.tensor(mse)):
            raise TrainingDiverged("the stage's output is not finite on the validation features")
    except FloatingPointError as err:  # TrainingDiverged, GlobalLayerUnstableError
        mse, error = float("nan"), first_line(err)
    return StageResult(
        variant=variant, loss=mse / variance, mse=mse, initial_loss=initial_mse / variance, initial_mse=initial_mse,
        train_loss=train_loss, train_time=time.perf_counter() - start, images=features.count("train"),
        epochs=recipe.epochs, precision=precision, error=error,
        state_dict={} if error else stage_state(candidate, stage),
    )


@torch.no_grad()
def stage_loss(module: nn.Module, features: StageFeatures, stage: str, *, split: str = "val", device: str | torch.device = "cpu",
               batch_size: int = 256) -> float:
    """Mean squared error of ``module`` (a stage: input features -> output features) on ``split``, in eval
    mode and float32; divide by :meth:`StageFeatures.target_variance` for the normalised loss."""
    device = torch.device(device)
    total, count = 0.0, 0
    with preserved_modes(module, False):
        for x, y in features.batches(stage, split=split, batch_size=batch_size, device=device):
            total += float((module(x).float() - y).square().sum())
            count += y.numel()
    return total / max(count, 1)


def _train(student: StageModule, features: StageFeatures, stage: str, recipe: StageRecipe, variance: float,
           device: torch.device, precision: str, memory_format: torch.memory_format) -> float:
    """The local training loop; the mean normalised loss of the last epoch."""
    parameters = [p for p in student.parameters() if p.requires_grad]
    if not parameters:
        raise DistillError(f"stage {stage!r} has nothing to train")
    optimizer = _optimizer(parameters, recipe)
    steps = recipe.epochs * -(-features.count("train") // recipe.batch_size)
    scheduler = (lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps) if recipe.schedule == "cosine"
                 else lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0))
    student.train()
    last = float("nan")
    for epoch in range(recipe.epochs):
        losses: list[Tensor] = []
        for x, y in features.batches(stage, batch_size=recipe.batch_size, shuffle=True, seed=recipe.seed + epoch, device=device):
            x = x.contiguous(memory_format=memory_format)  # (B, C_in, H_in, W_in)
            with _autocast(device, precision):
                out = student(x)  # (B, C, H, W)
            loss = (out.float() - y).square().mean() / variance
            if not bool(torch.isfinite(loss)):
                raise TrainingDiverged(f"the stage loss became {float(loss.detach())} in epoch {epoch + 1}: lower the learning rate or dt")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.detach())
        last = float(torch.stack(losses).mean())
    return last


def _optimizer(parameters: list[nn.Parameter], recipe: StageRecipe) -> torch.optim.Optimizer:
    decay = [p for p in parameters if p.ndim > 1]
    no_decay = [p for p in parameters if p.ndim <= 1]  # BN, biases, the scalar gate
    groups = [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=recipe.lr)
    return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.momentum > 0)


def _recalibrate(student: StageModule, features: StageFeatures, stage: str, recipe: StageRecipe, device: torch.device) -> None:
    """BatchNorm running statistics recomputed exactly on (up to 2,048) training features (``update_bn``)."""
    with preserved_modes(student):
        torch.optim.swa_utils.update_bn(_inputs(features, stage, recipe, device), student, device=None)


def _inputs(features: StageFeatures, stage: str, recipe: StageRecipe, device: torch.device) -> Iterator[Tensor]:
    for x, _ in features.batches(stage, batch_size=max(recipe.batch_size, 256), device=device, limit=_RECALIBRATION_IMAGES):
        yield x


def _example(original: nn.Module, features: StageFeatures) -> Tensor:
    first = next(iter(original.parameters()), None)
    return torch.zeros(1, *features.input_size, device=first.device if first is not None else "cpu")


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)
