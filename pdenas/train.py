"""Training and evaluation of candidates: SGD with Nesterov momentum and a cosine schedule by default,
optional knowledge distillation from the original model's logits (Hinton et al., 2015), seeded.

A loss that turns non-finite stops training with :class:`TrainingDiverged`, so a search can record the
candidate as failed and go on.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["TrainingDiverged", "TrainResult", "train_model", "evaluate", "recalibrate_batchnorm", "resolve_device"]


class TrainingDiverged(FloatingPointError):
    """The training loss became NaN or infinite."""


class _Budget(Protocol):
    epochs: int
    batch_size: int
    optimizer: str
    lr: float
    momentum: float
    weight_decay: float
    schedule: str
    warmup_epochs: int
    augment: bool
    distillation: float
    temperature: float


class _Data(Protocol):
    def train_batches(self, batch_size: int, *, seed: int, augment: bool = True, device: Any = "cpu") -> Iterable[tuple[Tensor, Tensor]]: ...
    def val_batches(self, batch_size: int, *, device: Any = "cpu") -> Iterable[tuple[Tensor, Tensor]]: ...

    @property
    def train_y(self) -> Tensor: ...


@dataclass(frozen=True)
class TrainResult:
    accuracy: float  # validation accuracy in [0, 1]
    train_time: float  # seconds
    eval_time: float  # seconds
    epochs: int
    final_loss: float


EpochCallback = Callable[[int, int, float], None]  # (epoch done, epochs, mean loss)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` is CUDA when present, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but CUDA is not available: use --device auto or cpu")
    return device


def train_model(
    model: nn.Module,
    data: _Data,
    budget: _Budget,
    *,
    seed: int = 0,
    device: str | torch.device = "auto",
    teacher: nn.Module | None = None,
    on_epoch: EpochCallback | None = None,
    epochs: int | None = None,
) -> TrainResult:
    """Train ``model`` in place for the budget's epochs, then evaluate on the validation split."""
    device = resolve_device(device)
    epochs = budget.epochs if epochs is None else epochs
    torch.manual_seed(seed)
    model.to(device)
    if teacher is not None and budget.distillation > 0:
        teacher.to(device).eval()
    else:
        teacher = None
    optimizer = _optimizer(model, budget)
    steps_per_epoch = max(1, math.ceil(len(data.train_y) / budget.batch_size))
    total_steps = steps_per_epoch * epochs
    start = time.perf_counter()
    loss_value = float("nan")
    step = 0
    for epoch in range(epochs):
        model.train()
        losses: list[Tensor] = []
        for x, y in data.train_batches(budget.batch_size, seed=seed + epoch, augment=budget.augment, device=device):
            _set_lr(optimizer, budget, step, total_steps, steps_per_epoch)
            logits = model(x)  # (B, classes)
            loss = _loss(logits, y, x, teacher, budget)
            if not bool(torch.isfinite(loss)):
                raise TrainingDiverged(
                    f"training loss became {float(loss.detach())} in epoch {epoch + 1}: lower the learning rate or dt"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
            step += 1
        loss_value = float(torch.stack(losses).mean()) if losses else float("nan")
        if on_epoch is not None:
            on_epoch(epoch + 1, epochs, loss_value)
    recalibrate_batchnorm(model, data, batch_size=budget.batch_size, device=device, seed=seed)
    train_time = time.perf_counter() - start
    start = time.perf_counter()
    accuracy = evaluate(model, data, batch_size=max(budget.batch_size, 256), device=device)
    return TrainResult(accuracy, train_time, time.perf_counter() - start, epochs, loss_value)


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module, data: _Data, *, batch_size: int, device: torch.device, seed: int = 0, max_images: int = 2048
) -> None:
    """Set every BatchNorm's running statistics to the exact mean/variance of the current weights on
    (up to ``max_images``) training images.

    After a short training budget the exponential running averages still lag behind the weights, and
    eval-mode accuracy then says little about the candidate; recomputing the statistics, as one-shot
    NAS methods do before scoring, removes that bias from the comparison.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return
    modes = [(m, m.training) for m in model.modules()]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    model.train()
    seen = 0
    for x, _ in data.train_batches(batch_size, seed=seed, augment=False, device=device):
        model(x)
        seen += x.shape[0]
        if seen >= max_images:
            break
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    for module, training in modes:
        module.training = training


@torch.no_grad()
def evaluate(model: nn.Module, data: _Data, *, batch_size: int = 256, device: str | torch.device = "auto") -> float:
    """Top-1 accuracy in [0, 1] on the validation split."""
    device = resolve_device(device)
    was_training = model.training
    model.to(device).eval()
    correct = total = 0
    try:
        for x, y in data.val_batches(batch_size, device=device):
            logits = model(x)
            if not bool(torch.isfinite(logits).all()):
                raise TrainingDiverged("the model's outputs are not finite on the validation split")
            correct += int((logits.argmax(1) == y).sum())
            total += int(y.numel())
    finally:
        model.train(was_training)
    return correct / max(total, 1)


def _loss(logits: Tensor, y: Tensor, x: Tensor, teacher: nn.Module | None, budget: _Budget) -> Tensor:
    loss = F.cross_entropy(logits, y)
    if teacher is None:
        return loss
    with torch.no_grad():
        target = teacher(x)  # (B, classes)
    T = budget.temperature
    kd = F.kl_div(F.log_softmax(logits / T, 1), F.softmax(target / T, 1), reduction="batchmean") * T * T
    return (1 - budget.distillation) * loss + budget.distillation * kd


def _optimizer(model: nn.Module, budget: _Budget) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)  # no weight decay on BN and biases
    groups = [{"params": decay, "weight_decay": budget.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if budget.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=budget.lr)
    return torch.optim.SGD(groups, lr=budget.lr, momentum=budget.momentum, nesterov=budget.momentum > 0)


def _set_lr(optimizer: torch.optim.Optimizer, budget: _Budget, step: int, total: int, per_epoch: int) -> None:
    warmup = budget.warmup_epochs * per_epoch
    if step < warmup:
        factor = (step + 1) / warmup
    elif budget.schedule == "cosine":
        progress = (step - warmup) / max(1, total - warmup)
        factor = 0.5 * (1 + math.cos(math.pi * progress))
    else:
        factor = 1.0
    for group in optimizer.param_groups:
        group["lr"] = budget.lr * factor
