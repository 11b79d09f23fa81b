"""Training and evaluation: a :class:`TrainRecipe` (the ``budget:`` section of a search configuration)
run by :func:`train_model`, seeded and resumable.

SGD with Nesterov momentum (or AdamW), a per-step learning-rate schedule built from torch's schedulers
(linear warm-up then cosine decay, ``SequentialLR``; or ``OneCycleLR``), label smoothing, optional
knowledge distillation from the original model's logits (Hinton et al., 2015), bfloat16 autocast and
channels-last memory format for speed. With ``checkpoint=PATH`` the state after every epoch is saved, and
a rerun with the same arguments continues from the last saved epoch. ``until_images=N`` stops after the
batch that reaches N training images (successive halving's rungs), saving the state there: a later call
with a larger N, or none, continues exactly where it stopped, as if it had never stopped.

A loss that turns non-finite stops training with :class:`TrainingDiverged`, so a search can record the
candidate as failed and go on. Before scoring, BatchNorm statistics are recomputed on training images,
augmented as in training (:func:`recalibrate_batchnorm`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import lr_scheduler

from ._memory_format import ChannelsLast, training_layout
from ._util import atomic_write, preserved_modes

if TYPE_CHECKING:
    from .data import ImageData

__all__ = [
    "TrainRecipe",
    "TrainRecipeError",
    "TrainResult",
    "TrainingDiverged",
    "bf16_supported",
    "evaluate",
    "recalibrate_batchnorm",
    "resolve_device",
    "train_model",
]

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "constant", "onecycle")
PRECISIONS = ("fp32", "bf16", "auto")


class TrainingDiverged(FloatingPointError):
    """The training loss became NaN or infinite."""


class TrainRecipeError(ValueError):
    """A training setting is out of range; the message names it and its valid values."""


@dataclass(frozen=True)
class TrainRecipe:
    """How a model is trained: the ``budget:`` section of a search configuration.

    Attributes:
        epochs: passes over the training images (>= 1).
        batch_size: images per step.
        optimizer: ``sgd`` (Nesterov momentum) or ``adamw``.
        lr: peak learning rate; momentum, weight_decay: the optimizer's (no weight decay on BN and biases).
        schedule: ``cosine`` (linear warm-up for ``warmup_epochs``, then cosine decay to 0), ``constant``
            (warm-up, then ``lr``), or ``onecycle`` (torch's ``OneCycleLR``: warm-up over ``warmup_epochs``,
            or 25 % of training when 0, from lr/25 to lr, then cosine decay to lr/1e5).
        warmup_epochs: epochs of linear warm-up (may be fractional).
        label_smoothing: of the cross-entropy loss, in [0, 1).
        subset: training images used (None: all); val_fraction: share of each class held out for scoring.
        augment: random crop (and flip where valid) on training batches.
        distillation: weight in [0, 1] of the distillation loss from the original model (needs its weights);
            temperature: its softmax temperature.
        precision: ``fp32``; ``bf16`` (autocast to bfloat16: about 1.9x faster training on CPUs with AVX-512
            BF16 or AMX, and on recent GPUs; weights and optimizer stay float32); ``auto``: bf16 where the
            hardware supports it natively (:func:`bf16_supported`), else fp32.
        channels_last: train in channels-last memory format: ``true``, ``false`` or ``auto`` (on CUDA only: on
            the CPU, torch 2.14's oneDNN can crash in the backward pass, see ``pdenas/_memory_format.py``).
    """

    epochs: int = 5
    batch_size: int = 64
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: Literal["cosine", "constant", "onecycle"] = "cosine"
    warmup_epochs: float = 0
    label_smoothing: float = 0.0
    subset: int | None = None
    val_fraction: float = 0.2
    augment: bool = True
    distillation: float = 0.0
    temperature: float = 4.0
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    channels_last: ChannelsLast = "auto"

    def __post_init__(self) -> None:
        problem = _recipe_problem(self)
        if problem:
            raise TrainRecipeError(problem)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _recipe_problem(r: TrainRecipe) -> str | None:
    checks: list[tuple[bool, str]] = [
        (_is_int(r.epochs) and r.epochs >= 1, f"'epochs' must be an integer >= 1, got {r.epochs!r}"),
        (_is_int(r.batch_size) and r.batch_size >= 1, f"'batch_size' must be an integer >= 1, got {r.batch_size!r}"),
        (r.optimizer in OPTIMIZERS, f"'optimizer' must be {' or '.join(OPTIMIZERS)}, got {r.optimizer!r}"),
        (_finite(r.lr) and r.lr > 0, f"'lr' must be a number > 0, got {r.lr!r}"),
        (_finite(r.momentum) and 0 <= r.momentum < 1, f"'momentum' must lie in [0, 1), got {r.momentum!r}"),
        (_finite(r.weight_decay) and r.weight_decay >= 0, f"'weight_decay' must be >= 0, got {r.weight_decay!r}"),
        (r.schedule in SCHEDULES, f"'schedule' must be one of {', '.join(SCHEDULES)}, got {r.schedule!r}"),
        (_finite(r.warmup_epochs) and 0 <= r.warmup_epochs < max(r.epochs, 1) if _is_int(r.epochs) else True,
         f"'warmup_epochs' must lie in [0, epochs) = [0, {r.epochs}), got {r.warmup_epochs!r}"),
        (_finite(r.label_smoothing) and 0 <= r.label_smoothing < 1,
         f"'label_smoothing' must lie in [0, 1), got {r.label_smoothing!r}"),
        (r.subset is None or (_is_int(r.subset) and r.subset >= 1), f"'subset' must be an integer >= 1 or null, got {r.subset!r}"),
        (_finite(r.val_fraction) and 0 < r.val_fraction < 1, f"'val_fraction' must lie in (0, 1), got {r.val_fraction!r}"),
        (isinstance(r.augment, bool), f"'augment' must be true or false, got {r.augment!r}"),
        (_finite(r.distillation) and 0 <= r.distillation <= 1, f"'distillation' must lie in [0, 1], got {r.distillation!r}"),
        (_finite(r.temperature) and r.temperature > 0, f"'temperature' must be > 0, got {r.temperature!r}"),
        (r.precision in PRECISIONS, f"'precision' must be one of {', '.join(PRECISIONS)}, got {r.precision!r}"),
        (isinstance(r.channels_last, bool) or r.channels_last == "auto", f"'channels_last' must be true, false or auto, got {r.channels_last!r}"),
    ]
    return next((message for ok, message in checks if not ok), None)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class TrainResult:
    accuracy: float  # validation accuracy in [0, 1]
    train_time: float  # seconds (this call; a resumed run counts only its own epochs)
    eval_time: float  # seconds
    epochs: int
    final_loss: float  # mean training loss of the last epoch
    precision: str = "fp32"  # what ran: fp32 or bf16
    resumed_from: int = 0  # epochs already done in the checkpoint this call continued
    images: int | None = None  # training images seen in all (None: not counted, the whole run)
    finished: bool = True  # False: stopped at ``until_images`` before the last epoch


EpochCallback = Callable[[int, int, float], None]  # (epoch done, epochs, mean loss)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` is CUDA when present, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but CUDA is not available: use --device auto or cpu")
    return device


def bf16_supported(device: str | torch.device = "cpu") -> bool:
    """Whether ``device`` computes bfloat16 natively (CPU: AVX-512 BF16 or AMX through oneDNN)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def train_model(
    model: nn.Module,
    data: ImageData,
    recipe: TrainRecipe,
    *,
    seed: int = 0,
    device: str | torch.device = "auto",
    teacher: nn.Module | None = None,
    on_epoch: EpochCallback | None = None,
    epochs: int | None = None,
    checkpoint: str | Path | None = None,
    until_images: int | None = None,
) -> TrainResult:
    """Train ``model`` in place with ``recipe``, then recalibrate its BatchNorms and evaluate it.

    Args:
        seed: seeds the shuffles, augmentation and dropout (epoch e shuffles with ``seed + e``).
        teacher: the original model, for ``recipe.distillation`` > 0 (ignored otherwise).
        epochs: overrides ``recipe.epochs`` (the schedule spans these epochs).
        checkpoint: a file for the training state after each epoch; when it exists, training continues
            from it (it must have been written by the same recipe, seed and epochs).
        until_images: stop after the batch at which this many training images (counted over the whole
            run, ``epochs`` passes) have been seen; the state there goes to ``checkpoint`` (needed), and
            the model is then scored. The learning-rate schedule still spans all ``epochs``.
    """
    if until_images is not None and checkpoint is None:
        raise TrainRecipeError("train_model(until_images=...) needs a checkpoint file to continue from")
    device = resolve_device(device)
    epochs = recipe.epochs if epochs is None else epochs
    precision = _precision(recipe, device)
    torch.manual_seed(seed)
    model.to(device=device)
    with training_layout(model, channels_last=recipe.channels_last, device=device) as memory_format:
        start = time.perf_counter()
        done = _train_epochs(model, data, recipe, device, precision, memory_format, seed=seed, teacher=teacher,
                             epochs=epochs, checkpoint=checkpoint, on_epoch=on_epoch, until_images=until_images)
        recalibrate_batchnorm(model, data, batch_size=recipe.batch_size, device=device, seed=seed, augment=recipe.augment)
    train_time = time.perf_counter() - start
    start = time.perf_counter()
    accuracy = evaluate(model, data, batch_size=max(recipe.batch_size, 256), device=device)
    return TrainResult(accuracy, train_time, time.perf_counter() - start, epochs, done.loss, precision, done.first_epoch,
                       images=done.images, finished=done.finished)


@dataclass(frozen=True)
class _Done:
    first_epoch: int  # the epoch this call started in (from a checkpoint)
    loss: float  # mean training loss of the last (partial) epoch run
    images: int  # training images seen over the whole run
    finished: bool  # every epoch done


def _train_epochs(
    model: nn.Module, data: ImageData, recipe: TrainRecipe, device: torch.device, precision: str,
    memory_format: torch.memory_format, *, seed: int, teacher: nn.Module | None, epochs: int,
    checkpoint: str | Path | None, on_epoch: EpochCallback | None, until_images: int | None = None,
) -> _Done:
    """The epochs of :func:`train_model` (from a checkpoint's, if any, which may stop inside an epoch)."""
    teacher = _batch_statistics_teacher(teacher, device, memory_format) if teacher is not None and recipe.distillation > 0 else None
    per_epoch = len(data.train_y)
    steps_per_epoch = max(1, math.ceil(per_epoch / recipe.batch_size))
    optimizer = _optimizer(model, recipe)
    scheduler = _scheduler(optimizer, recipe, steps_per_epoch, epochs)
    state = _Checkpoint(Path(checkpoint), recipe, seed, epochs) if checkpoint is not None else None
    first, skip = state.restore(model, optimizer, scheduler) if state is not None else (0, 0)
    seen = first * per_epoch + min(skip * recipe.batch_size, per_epoch)

    loss_value = state.last_loss if state is not None else float("nan")
    for epoch in range(first, epochs):
        if until_images is not None and seen >= until_images:
            return _Done(first, loss_value, seen, False)
        model.train()
        losses: list[Tensor] = []
        batches = data.train_batches(recipe.batch_size, seed=seed + epoch, augment=recipe.augment, device=device)
        for step, (x, y) in enumerate(batches):
            if epoch == first and step < skip:
                continue  # done before the checkpoint (the batches are drawn again to keep their random state)
            x = x.contiguous(memory_format=memory_format)  # (B, C, H, W)
            with _autocast(device, precision):
                loss = _loss(model(x), y, x, teacher, recipe)
            if not bool(torch.isfinite(loss)):
                raise TrainingDiverged(
                    f"training loss became {float(loss.detach())} in epoch {epoch + 1}: lower the learning rate or dt"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.detach())
            seen += int(y.shape[0])
            if until_images is not None and seen >= until_images and step + 1 < steps_per_epoch:
                loss_value = float(torch.stack(losses).float().mean())
                state.save(model, optimizer, scheduler, epoch, loss_value, batch=step + 1)  # type: ignore[union-attr]
                return _Done(first, loss_value, seen, False)
        loss_value = float(torch.stack(losses).float().mean()) if losses else float("nan")
        if state is not None:
            state.save(model, optimizer, scheduler, epoch + 1, loss_value)
        if on_epoch is not None:
            on_epoch(epoch + 1, epochs, loss_value)
    return _Done(first, loss_value, seen, True)


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module, data: ImageData, *, batch_size: int, device: torch.device, seed: int = 0, max_images: int = 2048,
    augment: bool = True,
) -> None:
    """Set every BatchNorm's running statistics to the exact mean/variance of the current weights on
    (up to ``max_images``) training images, with ``torch.optim.swa_utils.update_bn``.

    After a short training budget the exponential running averages still lag behind the weights, and
    eval-mode accuracy then says little about the candidate; recomputing the statistics, as one-shot
    NAS methods do before scoring, removes that bias from the comparison. Every module keeps its own
    train/eval flag afterwards.

    ``augment``: whether the images are augmented as in training (the default). The statistics must be
    those of the inputs the weights were trained under: with random crops, most training images carry
    zero-padded borders that shift every layer's statistics, and the layers after each BatchNorm learned
    that normalisation. Measured on the CIFAR-10 ``resnet32`` of ``benchmarks/``: 89.4 % held-out with
    statistics of augmented images, 83.6 % with those of the same images un-augmented.
    """
    batches = data.train_batches(batch_size, seed=seed, augment=augment, device=device)
    with preserved_modes(model):
        torch.optim.swa_utils.update_bn(_first_images(batches, max_images), model, device=None)


def _first_images(batches: Any, limit: int) -> Iterator[Tensor]:
    seen = 0
    for x, _ in batches:
        yield x
        seen += x.shape[0]
        if seen >= limit:
            return


@torch.no_grad()
def evaluate(model: nn.Module, data: ImageData, *, batch_size: int = 256, device: str | torch.device = "auto") -> float:
    """Top-1 accuracy in [0, 1] on the validation split (float32, eval mode)."""
    device = resolve_device(device)
    model.to(device)
    correct = total = 0
    with preserved_modes(model, False):
        for x, y in data.val_batches(batch_size, device=device):
            logits = model(x)  # (B, classes)
            if not bool(torch.isfinite(logits).all()):
                raise TrainingDiverged("the model's outputs are not finite on the validation split")
            correct += int((logits.argmax(1) == y).sum())
            total += int(y.numel())
    return correct / max(total, 1)


def _precision(recipe: TrainRecipe, device: torch.device) -> str:
    if recipe.precision == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    return recipe.precision


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def _batch_statistics_teacher(teacher: nn.Module, device: torch.device, memory_format: torch.memory_format) -> nn.Module:
    """A copy of ``teacher`` whose BatchNorms normalise with each batch's statistics, as the student's do in
    training, and leave their running statistics alone; every other module in eval mode.

    The distillation target must be what the teacher computes in the student's mode: a student that is the
    teacher then has zero distillation loss, and the gradient carries the teacher's knowledge rather than
    the gap between batch and running statistics. With the teacher in eval mode that gap dominated: on
    CIFAR-10, fine-tuning the trained resnet32 itself 2 epochs on 5,000 images (lr 0.005, weight 0.7,
    T = 4) took it from 84.84 % to 76.30 % held-out; with this teacher to 84.82 % (without one, 84.40 %).
    """
    twin = copy.deepcopy(teacher).to(device=device, memory_format=memory_format).eval()
    for module in twin.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.train()
            module.track_running_stats = False  # batch statistics, running buffers neither read nor written
    return twin


def _loss(logits: Tensor, y: Tensor, x: Tensor, teacher: nn.Module | None, recipe: TrainRecipe) -> Tensor:
    logits = logits.float()  # (B, classes); the loss in float32 under autocast too
    loss = F.cross_entropy(logits, y, label_smoothing=recipe.label_smoothing)
    if teacher is None:
        return loss
    with torch.no_grad():
        target = teacher(x).float()  # (B, classes)
    T = recipe.temperature
    kd = F.kl_div(F.log_softmax(logits / T, 1), F.softmax(target / T, 1), reduction="batchmean") * T * T
    return (1 - recipe.distillation) * loss + recipe.distillation * kd


def _optimizer(model: nn.Module, recipe: TrainRecipe) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)  # no weight decay on BN, biases and scalar gates
    groups = [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=recipe.lr)
    return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.momentum > 0)


def _scheduler(optimizer: torch.optim.Optimizer, recipe: TrainRecipe, per_epoch: int, epochs: int) -> lr_scheduler.LRScheduler:
    """A per-step schedule over ``epochs`` epochs of ``per_epoch`` steps."""
    total = per_epoch * epochs
    warmup = min(round(recipe.warmup_epochs * per_epoch), total - 1)
    if recipe.schedule == "onecycle":
        pct = warmup / total if warmup > 0 else 0.25
        return lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=total, pct_start=pct,
                                       cycle_momentum=recipe.optimizer == "sgd" and recipe.momentum > 0)
    if recipe.schedule == "cosine":
        main: lr_scheduler.LRScheduler = lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total - warmup))
    else:
        main = lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    if warmup <= 0:
        return main
    ramp = lr_scheduler.LinearLR(optimizer, start_factor=1.0 / warmup, end_factor=1.0, total_iters=warmup - 1)
    return lr_scheduler.SequentialLR(optimizer, [ramp, main], milestones=[warmup])


class _Checkpoint:
    """The training state after each epoch, in one file replaced atomically (a crash keeps the last one)."""

    def __init__(self, path: Path, recipe: TrainRecipe, seed: int, epochs: int) -> None:
        self.path = path
        self.identity = {"recipe": recipe.to_dict(), "seed": seed, "epochs": epochs}
        self.last_loss = float("nan")

    def restore(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: lr_scheduler.LRScheduler) -> tuple[int, int]:
        """Load the saved state into the arguments; the epochs already done and the batches done in the
        next one ((0, 0) without a file)."""
        if not self.path.is_file():
            return 0, 0
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - a truncated or foreign file
            raise TrainRecipeError(f"cannot resume from {self.path} ({type(err).__name__}): delete it to start over") from None
        if saved.get("identity") != self.identity:
            raise TrainRecipeError(
                f"{self.path} was written by another training run (other recipe, seed or epochs): delete it to start over"
            )
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["rng"])
        self.last_loss = float(saved["loss"])
        return int(saved["epoch"]), int(saved.get("batch", 0))

    def save(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: lr_scheduler.LRScheduler,
             epoch: int, loss: float, *, batch: int = 0) -> None:
        """The state after ``epoch`` whole epochs and ``batch`` batches of the next."""
        state = {
            "identity": self.identity, "epoch": epoch, "batch": batch, "loss": loss, "rng": torch.get_rng_state(),
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        }
        atomic_write(self.path, lambda tmp: torch.save(state, tmp))

