"""``pdenas evaluate MODEL --dataset DIR``: accuracy, MACs, params and latency of an exported model on any
labelled images, the first thing a user does with the file.

The model is fed as its model card says (:class:`pdenas.export.Preprocessing`: its input size, colour mode,
scale, mean and std), never with the dataset's own statistics, so the figures are those of the file as
deployed. The dataset's classes are matched to the model's by name: a dataset with classes the model does
not know is refused (or, with ``known_classes_only``, those images are left out), a dataset holding only
some of the model's classes is evaluated on those (the model still chooses among all of its own).

Accuracy runs the file in its own runtime (a checkpoint: eager PyTorch). Latency runs in ``runtime``: a
checkpoint is converted to any of them in memory (:func:`pdenas.cost.measure_latency`), the other files
run in theirs. The original model (the uncompressed architecture the card names, rebuilt with pdenas; its
weights do not change its cost) is measured the same way, next to it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .. import _format as fmt
from .._util import first_line
from ..cost import Cost, Latency, LatencyError, check_runtime, measure_latency, profile, time_call
from ..data import ImageData, load_dataset
from ..surgery import ModelSpecError, build_model
from ._card import ModelCard
from ._errors import ExportError
from ._load import KIND_RUNTIME, LoadedModel, load_exported, model_kind

__all__ = ["Evaluation", "evaluate_model", "evaluation_table"]

EVAL_BATCH = 256  # images per call while measuring accuracy
_SHOWN = 6  # class names shown in a message


@dataclass(frozen=True)
class Evaluation:
    """What :func:`evaluate_model` measured.

    ``accuracy`` = ``correct`` / ``images`` over the dataset's images of the ``classes`` both the dataset
    and the model have; ``left_out`` are the dataset's classes the model lacks (their images not counted,
    only with ``known_classes_only``), ``absent`` the model's classes the dataset lacks. ``cost``: the
    checkpoint's own, else the card's. ``original_*``: the uncompressed model's, measured in the same
    runtime (None when it could not be rebuilt here; ``notes`` says why).
    """

    path: Path
    format: str  # "checkpoint", "onnx", "torchscript" or "aoti"
    accuracy_runtime: str  # where the images ran
    dataset: str
    images: int
    correct: int
    accuracy: float
    classes: tuple[str, ...]
    left_out: tuple[str, ...]
    absent: tuple[str, ...]
    card: ModelCard
    cost: Cost | None
    latency: Latency | None
    original_cost: Cost | None
    original_latency: Latency | None
    notes: tuple[str, ...] = ()


def evaluate_model(
    path: str | Path,
    dataset: str | Path,
    *,
    runtime: str | None = None,
    batch_size: int = 1,
    threads: int | None = None,
    known_classes_only: bool = False,
    latency: bool = True,
    original: bool = True,
    min_run_time: float = 0.2,
    console: Any = None,
) -> Evaluation:
    """Evaluate the exported model ``path`` on every image of ``dataset`` (an ImageFolder folder or archive, or
    a registered dataset name; :func:`pdenas.data.load_dataset` with no validation split), and time it.

    Args:
        runtime: where latency is measured: a checkpoint in any of ``torch``, ``torchscript``,
            ``onnxruntime``, ``aoti`` (default: the runtime its card was measured in at export, else torch);
            the other files in their own only (the default).
        batch_size, threads: of the latency measurement (threads default: torch's current count).
        known_classes_only: leave out images of classes the model does not have instead of refusing.
        latency, original: False skips timing, or the original model's figures.
        console: a rich console to print the table on (None: print nothing).

    Raises:
        ExportError: a missing file, a file that is no exported model, a runtime that does not fit the
            file or is not installed, classes that do not match; ``pdenas.data.DataError``: the dataset.
    """
    say = (lambda text: None) if console is None else (lambda text: console.print(text, markup=False, highlight=False))
    path = Path(path)
    kind = model_kind(path)
    if runtime is not None:
        _check_runtime(kind, runtime, path)
    threads = threads or torch.get_num_threads()
    loaded = load_exported(path, threads=threads)
    card = loaded.card
    notes: list[str] = []
    if runtime is None:
        runtime = _default_runtime(loaded, notes)

    say(f"evaluating {path} ({kind}, run in {loaded.runtime if kind != 'checkpoint' else 'torch'}) on {dataset}")
    data = _images(dataset, card)
    x, y, classes, left_out, absent = _matched(data, card, known_classes_only)
    if left_out:
        notes.append(f"left out {_names(left_out)} ({_count(left_out, 'class')} of the dataset's), which the model does not have")
    if absent:
        notes.append(f"the dataset holds {len(classes)} of the model's {len(card.classes)} classes (not {_names(absent)}): "
                     f"accuracy is over those {len(classes)}, the model still choosing among all {len(card.classes)}")
    correct = _correct(loaded, x, y)

    input_size = card.preprocessing.input_size
    cost = profile(loaded.module, input_size) if loaded.module is not None else card.cost
    measured = _latency(loaded, runtime, batch_size, threads, min_run_time, say) if latency else None
    base_cost, base_latency = (None, None)
    if original:
        base_cost, base_latency = _original(card, runtime, batch_size, threads, min_run_time, latency, notes, say)
    result = Evaluation(
        path=path, format=kind, accuracy_runtime="torch" if kind == "checkpoint" else loaded.runtime, dataset=data.source,
        images=len(y), correct=correct, accuracy=correct / len(y), classes=classes, left_out=left_out, absent=absent,
        card=card, cost=cost, latency=measured, original_cost=base_cost, original_latency=base_latency, notes=tuple(notes),
    )
    if console is not None:
        _show(console, result)
    return result


def _check_runtime(kind: str, runtime: str, path: Path) -> None:
    """The runtime asked for must fit the file and be installed, before any work."""
    try:
        check_runtime(runtime)
    except LatencyError as err:
        raise ExportError(str(err)) from None
    own = KIND_RUNTIME[kind]
    if kind != "checkpoint" and runtime != own:
        raise ExportError(f"{path} is {_ARTICLE[kind]} file, which runs in {own} only: pass --runtime {own}, or evaluate "
                          "the model.pt checkpoint to measure it in another runtime")


_ARTICLE = {"onnx": "an ONNX", "torchscript": "a TorchScript", "aoti": "an AOTInductor"}


def _default_runtime(loaded: LoadedModel, notes: list[str]) -> str:
    """A file's own runtime; a checkpoint's: the one its latency was measured in at export, where it runs here."""
    if loaded.kind != "checkpoint":
        return loaded.runtime
    chosen = loaded.card.latency.runtime if loaded.card.latency is not None else "torch"
    try:
        check_runtime(chosen)
    except LatencyError as err:
        notes.append(f"latency in torch, not in {chosen} as at export: {err}")
        return "torch"
    return chosen


def _images(dataset: str | Path, card: ModelCard) -> ImageData:
    """Every image of ``dataset``, at the model's size where the model's input is square (PIL's resize)."""
    _, height, width = card.preprocessing.input_size
    return load_dataset(dataset, val_fraction=0.0, image_size=height if height == width else None)


def _matched(
    data: ImageData, card: ModelCard, known_classes_only: bool
) -> tuple[Tensor, Tensor, tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(images, labels as the model's class indices, classes evaluated, left out, absent)."""
    index = {name: i for i, name in enumerate(card.classes)}
    left_out = tuple(c for c in data.classes if c not in index)
    common = tuple(c for c in data.classes if c in index)
    if not common:
        raise ExportError(f"none of the dataset's {len(data.classes)} classes ({_names(data.classes)}) is one of the model's "
                          f"{len(card.classes)} ({_names(card.classes)}): is it the dataset the model was trained for?")
    if left_out and not known_classes_only:
        raise ExportError(f"the dataset has {_count(left_out, 'class')} the model does not have ({_names(left_out)}; the model's: "
                          f"{_names(card.classes)}): remove those class folders, or pass --known-classes-only to leave them out")
    mapping = torch.tensor([index.get(c, -1) for c in data.classes], dtype=torch.int64)  # dataset label -> model's
    labels = mapping[data.train_y]  # (N,)
    keep = labels >= 0
    absent = tuple(c for c in card.classes if c not in set(common))
    return data.train_x[keep], labels[keep], common, left_out, absent


def _correct(loaded: LoadedModel, x: Tensor, y: Tensor) -> int:
    """How many of the uint8 images ``x`` (N, C', H', W') the model classifies as ``y`` (N,)."""
    correct = 0
    for start in range(0, len(y), EVAL_BATCH):
        inputs = loaded.card.preprocessing.prepare(x[start : start + EVAL_BATCH]).contiguous()  # (B, C, H, W)
        logits = loaded.run(inputs)  # (B, classes)
        if logits.dim() != 2 or logits.shape[1] != len(loaded.card.classes):
            raise ExportError(f"{loaded.path} gives outputs of shape {tuple(logits.shape)}, its card names "
                              f"{len(loaded.card.classes)} classes: the card does not belong to this model")
        correct += int((logits.argmax(1) == y[start : start + EVAL_BATCH]).sum())
    return correct


def _latency(
    loaded: LoadedModel, runtime: str, batch_size: int, threads: int, min_run_time: float, say: Callable[[str], None]
) -> Latency:
    input_size = loaded.card.preprocessing.input_size
    say(f"timing the model in {fmt.runtime_setup(runtime, batch_size, threads)}")
    if loaded.module is not None:
        try:
            return measure_latency(loaded.module, input_size, runtime=runtime, batch_size=batch_size, threads=threads,  # type: ignore[arg-type]
                                   device="cpu", min_run_time=min_run_time)
        except LatencyError as err:
            raise ExportError(str(err)) from None
    x = torch.randn(batch_size, *input_size)
    return time_call(lambda: loaded.run(x), runtime=loaded.runtime, batch_size=batch_size, threads=threads,
                     min_run_time=min_run_time)


def _original(
    card: ModelCard, runtime: str, batch_size: int, threads: int, min_run_time: float, latency: bool, notes: list[str],
    say: Callable[[str], None],
) -> tuple[Cost | None, Latency | None]:
    """The uncompressed model's cost and latency (its architecture rebuilt from the card; untrained weights)."""
    if card.model is None:
        notes.append("the model card does not name the original model: no comparison")
        return None, None
    input_size = card.preprocessing.input_size
    try:
        base = build_model(card.model, num_classes=len(card.classes), in_channels=input_size[0]).eval()
    except (ModelSpecError, ImportError) as err:
        notes.append(f"the original model {card.model} cannot be rebuilt here ({first_line(err)}): no comparison")
        return None, None
    cost = profile(base, input_size)
    if not latency:
        return cost, None
    say(f"timing the original model ({card.model}) in {runtime}")
    try:
        return cost, measure_latency(base, input_size, runtime=runtime, batch_size=batch_size, threads=threads,  # type: ignore[arg-type]
                                     device="cpu", min_run_time=min_run_time)
    except LatencyError as err:
        notes.append(f"the original model's latency could not be measured: {err}")
        return cost, None


def _count(items: tuple[str, ...], noun: str) -> str:
    return f"{len(items)} {noun}" + ("" if len(items) == 1 else "es" if noun.endswith("s") else "s")


def _names(names: tuple[str, ...] | list[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f", ... ({len(names) - _SHOWN} more)" if len(names) > _SHOWN else "")


# ---------------------------------------------------------------------------------------------- display


def evaluation_table(result: Evaluation) -> Any:
    """A rich table: the original model next to the evaluated one, with ratios (original / model)."""
    from rich import box
    from rich.table import Table

    table = Table(title=result.path.name,
                  box=box.SIMPLE_HEAD, title_justify="left", header_style="bold")
    table.add_column("")
    for name in ("original", "model", "ratio"):
        table.add_column(name, justify="right", no_wrap=True)
    o_cost, cost = result.original_cost, result.cost
    table.add_row("accuracy", "", fmt.percent(result.accuracy), "")
    for label, key, show in (("MACs", "macs", fmt.count), ("conv MACs", "conv_macs", fmt.count), ("params", "params", _int)):
        mine = getattr(cost, key) if cost is not None else None
        theirs = getattr(o_cost, key) if o_cost is not None else None
        table.add_row(label, show(theirs), show(mine), fmt.ratio(theirs / mine) if theirs and mine else "-")
    o_ms = result.original_latency.median_ms if result.original_latency is not None else None
    ms = result.latency.median_ms if result.latency is not None else None
    table.add_row("latency", fmt.milliseconds(o_ms), fmt.milliseconds(ms), fmt.ratio(o_ms / ms) if o_ms and ms else "-")
    return table


def _show(console: Any, result: Evaluation) -> None:
    console.print(evaluation_table(result))
    lines = [
        f"accuracy: {result.correct:,} of {result.images:,} images ({len(result.classes)} classes) of {result.dataset}, "
        f"run in {result.accuracy_runtime}, "
        f"fed as the model card says ({_feeding(result.card)})",
    ]
    if result.latency is not None:
        lat = result.latency
        lines.append(f"latency: {fmt.runtime_setup(lat.runtime, lat.batch_size, lat.threads)}, median per call on {lat.device}, "
                     f"measured now; the original: its architecture ({result.card.model}), in the same runtime; ratio: original / model")
    if result.card.accuracy is not None:
        lines.append(f"at export: {fmt.percent(result.card.accuracy)} on {result.card.dataset}'s validation split")
    for line in lines + [f"note: {n}" for n in result.notes]:
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def _feeding(card: ModelCard) -> str:
    pre = card.preprocessing
    size = "x".join(str(v) for v in pre.input_size)
    numbers = ", ".join(f"{v:.4f}" for v in pre.mean), ", ".join(f"{v:.4f}" for v in pre.std)
    scale = "x/255" if abs(pre.scale - 1 / 255) < 1e-12 else f"x*{pre.scale:g}"
    return f"{pre.color_mode} {size}, {scale}, mean ({numbers[0]}), std ({numbers[1]})"


def _int(value: int | None) -> str:
    return "–" if value is None else f"{value:,}"
