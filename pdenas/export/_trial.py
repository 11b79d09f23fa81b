"""``pdenas export``: turn one trial of a study into a model to keep.

The search keeps each trial's plan and scores, not its weights, so exporting rebuilds the candidate
exactly as the search did (the same data split, base model and weights, from the study's stored
configuration), trains it, evaluates it and saves it:

1. ``pdenas.search.train_candidate``, the search's own code: the plan applied to the trained original
   (``weights``, or trial 0's ``original.pt`` in the study directory), each changed stage loaded from
   its distilled variant in the study's store (``stages/``; a variant missing there is distilled again)
   when the study used the stage-wise step, new weights seeded from the study's seed and the plan;
2. then trained on the search's budget (``budget.epochs``, its schedule, seed and distillation from the
   original): this repeats the trial's own training, so the accuracy is the one the search recorded, up
   to the nondeterminism of the device's kernels (on one CPU thread, exactly);
3. with ``epochs=E > 0``, E more epochs with a fresh optimizer and learning-rate schedule (warm-up and
   cosine decay again), on the same data (shuffles continue where the budget's stopped);
4. evaluation on the study's validation split, then, on the CPU, params, MACs and latency of the
   candidate and of the original model, in the runtime asked for (default: the study's ``latency:``
   section's, with its batch size and threads; :func:`pdenas.cost.measure_latency`);
5. ``model.pt`` (:func:`pdenas.save_compressed`: plan + state dict + metadata, loadable with
   :func:`pdenas.load_compressed`), and on request ``model.torchscript.pt`` (``torch.jit.trace``),
   ``model.onnx`` (``torch.onnx.export``, opset 17, dynamic batch) and ``model.pt2`` (an AOTInductor
   package, :func:`export_aoti`). Each carries the model card (:class:`ModelCard`: the preprocessing and
   the class names, so that the file runs without pdenas' data code). Every written file is loaded back
   and run on a batch of validation images; its outputs must match the eager model's within
   :data:`TOLERANCE` (max absolute difference of the logits), else :class:`ExportError`.

ONNX: the TorchScript-based exporter (``dynamo=False``) first, as it traces the same graph as
TorchScript; when it fails, the ``torch.export``-based one (needs ``onnxscript``). The file is run with
``onnxruntime`` when installed (``pip install pdenas[onnx]``), else with ``onnx``'s pure-Python
``ReferenceEvaluator`` on 2 images.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch
from torch import Tensor, nn

from .. import __version__
from .. import _format as fmt
from .._util import first_line
from ..cost import Latency, LatencyError, check_runtime, measure_latency, profile
from ..report import ReportError, open_study, select_trial
from ..report import locate_study
from ..search import (
    SearchConfig,
    SearchConfigError,
    SearchContext,
    StudyError,
    StudyRecord,
    TrialRecord,
    build_context,
    train_candidate,
    training_images,
    use_trained_original,
)
from ..surgery import CompressionPlan, PlanError, load_compressed, save_compressed
from ..distill import DistillError
from ..train import TrainingDiverged, TrainResult, resolve_device, train_model
from ..data import DataError, ImageData
from ._card import ModelCard, Preprocessing
from ._errors import ExportError
from ._formats import (
    CHECK_BATCH,
    ONNX_OPSET,
    ONNX_OPSET_DYNAMO,
    aoti_runner,
    check_formats,
    export_aoti,
    export_onnx,
    export_torchscript,
    max_abs_diff,
    onnx_runner,
    quiet,
)

__all__ = ["FORMATS", "TOLERANCE", "ExportError", "ExportResult", "export_table", "export_trial", "parse_formats"]

FORMATS = ("pt", "torchscript", "onnx", "aoti")
TOLERANCE = 1e-4  # max absolute difference of the logits, exported vs eager
TRACE_BATCH = 2  # traced on another batch size than the check's, so a fixed batch size would show



@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_trial` wrote and measured.

    ``accuracy`` is on the study's validation split after all the training (``epochs`` in total);
    ``retrained_accuracy`` after the search's budget only, ``search_accuracy`` what the trial
    recorded in the search. ``original`` holds the original model's figures: its accuracy from the
    study's reference trial, params and MACs from the study, latency measured now like the
    candidate's (``latency``: CPU, the runtime, batch size and threads; ``latency_ms`` its median).
    ``card`` is what every written file says about the model. ``max_abs_diff`` maps each written format to the max
    absolute difference of its outputs from the eager model's (``pt``: the checkpoint reloaded with
    ``load_compressed``). ``model`` is the trained model itself (eval mode, on the CPU).
    """

    trial: int
    plan_text: str
    plan: dict[str, Any]
    paths: dict[str, Path]
    accuracy: float
    macs: int
    conv_macs: int
    params: int
    latency_ms: float
    original: dict[str, Any]
    search_accuracy: float | None
    retrained_accuracy: float
    epochs: int  # epochs trained in total: the search's budget + fine_tune_epochs
    fine_tune_epochs: int
    max_abs_diff: dict[str, float]
    fine_tune_images: int = 0  # training images of the further epochs (0: none were run)
    tolerance: float = TOLERANCE
    onnx_exporter: str | None = None  # "torchscript" (dynamo=False) or "dynamo"
    onnx_runtime: str | None = None  # "onnxruntime X.Y" or "onnx.reference"
    check_images: dict[str, int] = field(default_factory=dict)  # images each format was checked on
    study_dir: Path = Path(".")
    device: str = "cpu"  # where it was trained
    notes: list[str] = field(default_factory=list)
    model: nn.Module | None = field(default=None, repr=False, compare=False)  # the trained model, eval mode, CPU
    latency: Latency | None = None
    card: ModelCard | None = None


def parse_formats(values: str | Iterable[str] | None) -> tuple[str, ...]:
    """``"onnx"``, ``["torchscript", "onnx"]`` or ``"pt,onnx"`` -> ``("pt", ...)`` in :data:`FORMATS` order."""
    if values is None:
        values = ()
    elif isinstance(values, str):
        values = (values,)
    asked: set[str] = set()
    for value in values:
        for name in str(value).split(","):
            name = name.strip().lower()
            if not name:
                continue
            if name == "ts":
                name = "torchscript"
            if name not in FORMATS:
                raise ExportError(f"unknown export format {name!r}: choose from {', '.join(FORMATS)} (repeat --format or give a comma list)")
            asked.add(name)
    return tuple(name for name in FORMATS if name == "pt" or name in asked)


def export_trial(
    study_dir: str | Path,
    *,
    trial: str | int = "pareto:knee",
    epochs: int = 0,
    subset: int | str | None = None,
    out: str | Path | None = None,
    formats: str | Iterable[str] = ("pt",),
    device: str = "auto",
    runtime: str | None = None,
    console: Any = None,
) -> ExportResult:
    """Rebuild, train, evaluate and save trial ``trial`` of the study in ``study_dir``.

    Args:
        trial: a trial number, or ``pareto:best-accuracy`` / ``pareto:smallest`` / ``pareto:knee``.
        epochs: epochs of further training after the search's budget (0: the budget only).
        subset: the training images of those epochs: None, the search's (its ``budget.subset``); a number,
            that many of the study's training split (stratified, seeded like the search's); ``"all"``, every
            one. The validation split and the normalisation stay the search's.
        out: the checkpoint's path (``*.pt``; the other files get its stem) or a directory
            (``DIR/model.pt``, ...); default ``STUDY_DIR/export/trial-N/model.pt``.
        formats: any of ``pt``, ``torchscript``, ``onnx``, ``aoti``; ``pt`` is always written.
        device: where to train (``auto``: CUDA when present); costs and checks run on the CPU.
        runtime: where latency is measured (``torch``, ``torchscript``, ``onnxruntime``, ``aoti``; default
            the study's ``latency.runtime``), with the study's ``latency.batch_size`` and ``latency.threads``.
        console: a ``rich`` console to report progress and the final table on; None: silent.

    Raises:
        ExportError: not a study directory, unknown/failed/unfinished/infeasible trial, unknown
            format, training diverged, an export failed or its outputs differ beyond the tolerance.
    """
    say = _printer(console)
    formats = parse_formats(formats)
    check_formats(formats)  # before any work: training takes minutes, a missing package is known now
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 0:
        raise ExportError(f"--epochs must be a whole number >= 0, got {epochs!r}")
    _check_subset(subset, epochs)
    train_device = _device(device)
    source = _source(Path(study_dir), trial, train_device)
    runtime = runtime or source.config.latency.runtime
    try:
        check_runtime(runtime)
    except LatencyError as err:
        raise ExportError(f"--runtime {runtime}: {err}") from None
    paths = _paths(out, source.study_dir, source.trial.number)
    say(f"exporting trial {source.trial.number} of {source.study_dir}: {source.plan_text}")

    ctx = _rebuild(source)
    tune_data = _fine_tune_data(ctx, subset)
    fine_tune_images = len(tune_data.train_y) if epochs else 0
    candidate, first, final = _train(ctx, source, epochs, tune_data, train_device, say)
    cost = profile(candidate, ctx.input_size)
    notes = []
    if source.trial.macs is not None and source.trial.macs != cost.macs:
        notes.append(f"the rebuilt candidate costs {cost.macs:,} MACs, the search recorded {source.trial.macs:,} (another pdenas version?)")

    model = candidate.to("cpu").eval()
    say(f"timing the exported and the original model in {runtime}")
    measured = _latency(model, ctx, source, runtime)
    original = _original(source, ctx, runtime)
    card = ModelCard(
        classes=tuple(_classes(ctx.data, ctx.num_classes)), preprocessing=Preprocessing.from_data(ctx.data),
        model=source.config.model, cost=cost, dataset=source.config.dataset, accuracy=final.accuracy, latency=measured,
    )
    metadata = _metadata(source, cost, measured.median_ms, first.accuracy, final.accuracy, epochs, original)
    metadata["fine_tune_images"] = fine_tune_images
    save_compressed(paths["pt"], model, plan=source.plan, model_spec=source.config.model, input_size=ctx.input_size,
                    num_classes=ctx.num_classes, metadata={**metadata, "model_card": card.to_dict()})
    checks = _write_and_check(model, ctx.data, formats, paths, card.file_metadata(), say,
                              batch_size=source.config.latency.batch_size)

    result = ExportResult(
        trial=source.trial.number, plan_text=source.plan_text, plan=source.plan.to_dict(),
        paths={name: paths[name] for name in checks.diffs}, accuracy=final.accuracy, macs=cost.macs,
        conv_macs=cost.conv_macs, params=cost.params, latency_ms=measured.median_ms, original=original,
        search_accuracy=source.trial.accuracy, retrained_accuracy=first.accuracy,
        epochs=source.config.budget.epochs + epochs, fine_tune_epochs=epochs, max_abs_diff=checks.diffs,
        fine_tune_images=fine_tune_images,
        onnx_exporter=checks.onnx_exporter, onnx_runtime=checks.onnx_runtime, check_images=checks.images,
        study_dir=source.study_dir, device=str(train_device), notes=notes, model=model, latency=measured, card=card,
    )
    _show(console, result)
    bad = {name: diff for name, diff in checks.diffs.items() if not diff <= TOLERANCE}
    if bad:
        shown = ", ".join(f"{name} {diff:.3g}" for name, diff in bad.items())
        raise ExportError(
            f"the exported model's outputs differ from the eager model's beyond the tolerance {TOLERANCE:g} "
            f"(max abs difference: {shown}): the files are in {paths['pt'].parent} but do not trust them; please report this"
        )
    return result


@dataclass(frozen=True)
class _Source:
    """The trial to export and what the search knew when it ran it."""

    study_dir: Path
    study_name: str
    trial: TrialRecord
    study: StudyRecord
    config: SearchConfig  # the study's, on the export's device
    plan: CompressionPlan
    plan_text: str
    optuna_study: optuna.Study  # where the original's trained weights are recorded


def _device(device: str) -> torch.device:
    try:
        return resolve_device(device)
    except (ValueError, RuntimeError) as err:
        raise ExportError(str(err)) from None


def _source(study_dir: Path, spec: str | int, device: torch.device) -> _Source:
    """The chosen trial, its plan and the study's configuration; one-line errors for anything unusable."""
    try:
        study = open_study(study_dir)
        chosen = select_trial(study, spec)
    except ReportError as err:
        raise ExportError(str(err)) from None
    record = StudyRecord.from_study(study)
    if chosen.plan is None:
        raise ExportError(f"trial {chosen.number} recorded no plan, so it cannot be rebuilt: pick another trial")
    if record.config is None:
        raise ExportError(f"{study_dir}: the study holds no pdenas configuration: it was not made by pdenas search")
    try:
        config = dataclasses.replace(record.search_config(), device=str(device))
        plan = CompressionPlan.from_dict(chosen.plan)
    except (SearchConfigError, PlanError) as err:
        raise ExportError(f"trial {chosen.number} of {study_dir} cannot be rebuilt: {err}") from None
    return _Source(study_dir, study.study_name, chosen, record, config, plan, chosen.plan_text or plan.describe(), study)


def _rebuild(source: _Source) -> SearchContext:
    """The data and base model exactly as the search built them, the base holding the original the
    search compressed: the given weights, or what the study's trial 0 trained (a study of pdenas 0.1.0,
    whose original's trial kept no weights, compressed the model as initialised: so does its export)."""
    try:
        ctx = build_context(source.config, location=locate_study(source.study_dir))
    except (ValueError, OSError) as err:  # SearchConfigError, DataError, ModelSpecError/WeightsError, missing files
        raise ExportError(f"cannot rebuild the study's data and model: {first_line(err)}") from None
    original = source.study.original
    kept_none = original.trial_number is not None and original.weights_fingerprint is None
    if not source.trial.reference and not kept_none:
        try:
            use_trained_original(ctx, source.optuna_study)
        except StudyError as err:
            raise ExportError(f"cannot rebuild trial {source.trial.number}: {err}") from None
    return ctx


def _check_subset(subset: int | str | None, epochs: int) -> None:
    if subset is None:
        return
    if not (subset == "all" or (isinstance(subset, int) and not isinstance(subset, bool) and subset >= 1)):
        raise ExportError(f"--subset must be a whole number >= 1 or 'all', got {subset!r}")
    if epochs == 0:
        raise ExportError("--subset sets the images of the further training: give --epochs N (N >= 1) with it")


def _fine_tune_data(ctx: SearchContext, subset: int | str | None) -> ImageData:
    """The images the further epochs train on: the search's, or ``subset`` of the same training split
    ("all": every image; :func:`pdenas.search.training_images`)."""
    if subset is None:
        return ctx.data
    try:
        return training_images(ctx, None if subset == "all" else subset)  # type: ignore[arg-type]
    except (DataError, OSError) as err:
        raise ExportError(f"--subset {subset}: {first_line(err)}") from None


def _train(
    ctx: SearchContext, source: _Source, epochs: int, tune_data: ImageData, device: torch.device, say: Callable[[str], None]
) -> tuple[nn.Module, TrainResult, TrainResult]:
    """The trial's candidate trained as the search did (repeating the trial), then ``epochs`` more on
    ``tune_data`` with a fresh schedule."""
    config = source.config
    budget = config.budget
    if config.stagewise.enabled and not source.trial.reference:
        say(f"assembling the candidate from the study's distilled stages ({source.study_dir / 'stages'}; missing ones are distilled)")
    try:
        say(f"training on the search's budget: {_epochs(budget.epochs)} on {ctx.data.name} ({device})")
        trained = train_candidate(ctx, source.plan, reference=source.trial.reference, on_epoch=_epoch_printer(say))
    except (TrainingDiverged, FloatingPointError, DistillError) as err:
        raise ExportError(f"training trial {source.trial.number}'s candidate failed: {first_line(err)}") from None
    except Exception as err:  # noqa: BLE001 - a plan that no longer fits the model
        raise ExportError(
            f"trial {source.trial.number}'s plan does not fit {source.config.model} any more: {first_line(err)}"
        ) from None
    first, candidate = trained.result, trained.model
    if epochs == 0:
        return candidate, first, first
    teacher = ctx.base_model if budget.distillation > 0 else None
    try:
        say(f"training {_epochs(epochs)} more on {len(tune_data.train_y):,} images (fresh optimizer and learning-rate schedule)")
        final = train_model(candidate, tune_data, budget, seed=config.seed + budget.epochs, device=device,
                            teacher=teacher, on_epoch=_epoch_printer(say), epochs=epochs)
    except (TrainingDiverged, FloatingPointError) as err:
        raise ExportError(f"training trial {source.trial.number}'s candidate diverged: {first_line(err)}") from None
    return candidate, first, final


def _latency(model: nn.Module, ctx: SearchContext, source: _Source, runtime: str) -> Latency:
    """``model``'s latency on the CPU in ``runtime``, with the study's batch size and threads."""
    setup = source.config.latency
    try:
        return measure_latency(model, ctx.input_size, runtime=runtime, batch_size=setup.batch_size,  # type: ignore[arg-type]
                               threads=setup.threads, device="cpu")
    except LatencyError as err:
        raise ExportError(str(err)) from None


def _classes(data: ImageData, num_classes: int) -> list[str]:
    """The model's class names: the dataset's (by output index), numbered where the model has more outputs."""
    return [data.classes[i] if i < len(data.classes) else str(i) for i in range(num_classes)]


def _original(source: _Source, ctx: SearchContext, runtime: str) -> dict[str, Any]:
    """The original model's figures: accuracy from its trial, costs from the study, latency measured now."""
    known = source.study.original
    base = ctx.base_model.to("cpu").eval()
    measured = _latency(base, ctx, source, runtime)
    return {
        "accuracy": known.accuracy,
        "macs": int(known.macs if known.macs is not None else ctx.original.macs),
        "conv_macs": int(known.conv_macs if known.conv_macs is not None else ctx.original.conv_macs),
        "params": int(known.params if known.params is not None else ctx.original.params),
        "latency_ms": measured.median_ms,
        "latency": measured.to_dict(),
        "search_latency_ms": known.latency_ms,
        "trial": known.trial_number,
        "epochs": source.config.budget.epochs,
        "weights_given": source.config.weights is not None,  # trial 0 scored them as they are: no training
    }


def _metadata(
    source: _Source, cost: Any, latency_ms: float, retrained: float, accuracy: float, epochs: int, original: dict[str, Any]
) -> dict[str, Any]:
    """What the checkpoint records about itself (``load_compressed(...).pdenas_metadata``)."""
    return {
        "trial": source.trial.number,
        "plan_text": source.plan_text,
        "accuracy": accuracy,
        "retrained_accuracy": retrained,
        "search_accuracy": source.trial.accuracy,
        "macs": cost.macs,
        "conv_macs": cost.conv_macs,
        "params": cost.params,
        "latency_ms": latency_ms,
        "epochs": source.config.budget.epochs + epochs,
        "budget_epochs": source.config.budget.epochs,
        "fine_tune_epochs": epochs,
        "dataset": source.config.dataset,
        "seed": source.config.seed,
        "study_dir": str(source.study_dir.resolve()),
        "study_name": source.study_name,
        "original": {k: original[k] for k in ("accuracy", "macs", "conv_macs", "params")},
        "pdenas_version": __version__,
        "torch_version": str(torch.__version__),
    }


@dataclass(frozen=True)
class _Checks:
    diffs: dict[str, float]  # format -> max abs difference from the eager model
    images: dict[str, int]  # format -> images it was checked on
    onnx_exporter: str | None = None
    onnx_runtime: str | None = None


def _write_and_check(
    model: nn.Module, data: Any, formats: tuple[str, ...], paths: dict[str, Path], metadata: dict[str, str],
    say: Callable[[str], None], *, batch_size: int,
) -> _Checks:
    """Load the checkpoint back, write the other formats (each with ``metadata``), and run each on validation images.

    The ONNX file's Global layers take the form that is faster at ``batch_size`` (the study's latency setup)."""
    images = _validation_images(data, CHECK_BATCH)  # (N, C, H, W)
    with torch.no_grad():
        expected = model(images)
        diffs = {"pt": max_abs_diff(load_compressed(paths["pt"])(images), expected)}
    checked = {"pt": len(images)}
    trace_input = images[:TRACE_BATCH] if len(images) > TRACE_BATCH else images
    if "torchscript" in formats:
        say("tracing TorchScript")
        export_torchscript(model, paths["torchscript"], trace_input, metadata=metadata)
        with quiet(), torch.no_grad():
            scripted = torch.jit.load(str(paths["torchscript"]), map_location="cpu")
            diffs["torchscript"] = max_abs_diff(scripted(images), expected)
        checked["torchscript"] = len(images)
    exporter = runtime = None
    if "onnx" in formats:
        say("exporting ONNX")
        exporter = export_onnx(model, paths["onnx"], trace_input, say=say, metadata=metadata, batch_size=batch_size)
        run, runtime, limit = onnx_runner(paths["onnx"])
        sample = images[:limit]
        with torch.no_grad():
            diffs["onnx"] = max_abs_diff(torch.from_numpy(run(sample.numpy())), model(sample))
        checked["onnx"] = len(sample)
    if "aoti" in formats:
        say("compiling an AOTInductor package (C++: about a minute)")
        export_aoti(model, paths["aoti"], trace_input, metadata=metadata)
        with torch.no_grad():
            diffs["aoti"] = max_abs_diff(aoti_runner(paths["aoti"])(images), expected)
        checked["aoti"] = len(images)
    return _Checks(diffs, checked, exporter, runtime)


def _show(console: Any, result: ExportResult) -> None:
    if console is None:
        return
    console.print(export_table(result))
    for line in _legend(result) + _check_lines(result) + [f"note: {n}" for n in result.notes]:
        console.print(line, markup=False, highlight=False)
    for name, path in result.paths.items():
        console.print(f"{name}: {path}", markup=False, highlight=False)


def export_table(result: ExportResult) -> Any:
    """A rich table: the original model next to the exported one, with ratios."""
    from rich import box
    from rich.table import Table

    orig = result.original
    o_acc = orig.get("accuracy")

    def ratio(a: float | None, b: float | None) -> str:
        return fmt.ratio(a / b) if a and b else "-"

    table = Table(title=f"trial {result.trial}: original vs exported", box=box.SIMPLE_HEAD, title_justify="left",
                  header_style="bold")
    table.add_column("")
    for name in ("original", "exported", "ratio"):
        table.add_column(name, justify="right", no_wrap=True)
    delta = fmt.points(result.accuracy - o_acc) if o_acc is not None else "-"
    table.add_row("accuracy", fmt.percent(o_acc), fmt.percent(result.accuracy), delta)
    table.add_row("MACs", fmt.count(orig["macs"]), fmt.count(result.macs), ratio(orig["macs"], result.macs))
    table.add_row("conv MACs", fmt.count(orig["conv_macs"]), fmt.count(result.conv_macs), ratio(orig["conv_macs"], result.conv_macs))
    table.add_row("params", f"{orig['params']:,}", f"{result.params:,}", ratio(orig["params"], result.params))
    table.add_row("latency", fmt.milliseconds(orig.get("latency_ms")), fmt.milliseconds(result.latency_ms),
                  ratio(orig.get("latency_ms"), result.latency_ms))
    if result.fine_tune_epochs:
        table.add_row("accuracy before the extra epochs", "", fmt.percent(result.retrained_accuracy), "")
    if result.search_accuracy is not None:
        table.add_row("accuracy in the search", "", fmt.percent(result.search_accuracy), "")
    return table


def _legend(result: ExportResult) -> list[str]:
    orig = result.original
    extra = f" + {result.fine_tune_epochs} more" if result.fine_tune_epochs else ""
    return [
        (
            f"accuracy: on the study's validation split; the original's from the search (trial {orig.get('trial')}, "
            + ("the given weights as they are" if orig.get("weights_given") else _epochs(orig.get("epochs")))
            + f"), the exported model's after {_epochs(orig.get('epochs'))}{extra}"
        ),
        (
            "MACs: honest (the Global layers' arithmetic counted); conv MACs: as fvcore and the paper count them; "
            f"latency: {_setup(result.latency)}, median per call on the CPU, both measured now; ratio: original / exported"
        ),
    ]


# ---------------------------------------------------------------------------------------------------


_EXPORTERS = {"torchscript": "TorchScript-based (dynamo=False)", "dynamo": "torch.export-based (dynamo=True)"}


def _check_lines(result: ExportResult) -> list[str]:
    what = {
        "pt": "checkpoint reloaded with pdenas.load_compressed",
        "torchscript": "torch.jit.trace, reloaded with torch.jit.load",
        "onnx": f"opset {ONNX_OPSET if result.onnx_exporter == 'torchscript' else ONNX_OPSET_DYNAMO}, {_EXPORTERS.get(result.onnx_exporter or '', result.onnx_exporter)} exporter, "
        f"run with {result.onnx_runtime}",
        "aoti": "AOTInductor package, loaded with torch._inductor.aoti_load_package",
    }
    lines = []
    for name, diff in result.max_abs_diff.items():
        verdict = f"<= {result.tolerance:g} ok" if diff <= result.tolerance else f"> {result.tolerance:g} FAILED"
        lines.append(
            f"check {name} ({what[name]}): max abs output difference from the eager model {diff:.3g} on "
            f"{result.check_images.get(name)} validation images, {verdict}"
        )
    return lines


def _setup(measured: Latency | None) -> str:
    return "not measured" if measured is None else fmt.runtime_setup(measured.runtime, measured.batch_size, measured.threads)


def _paths(out: str | Path | None, study_dir: Path, number: int) -> dict[str, Path]:
    """Each format's file: the checkpoint's path, and the others named after its stem."""
    if out is None:
        pt = study_dir / "export" / f"trial-{number}" / "model.pt"
    else:
        out = Path(out)
        pt = out if out.suffix in (".pt", ".pth") and not out.is_dir() else out / "model.pt"
    return {
        "pt": pt,
        "torchscript": pt.with_name(pt.stem + ".torchscript.pt"),
        "onnx": pt.with_name(pt.stem + ".onnx"),
        "aoti": pt.with_name(pt.stem + ".pt2"),
    }


def _validation_images(data: Any, count: int) -> Tensor:
    """The first ``count`` validation images, normalised as the model sees them, on the CPU."""
    for x, _ in data.val_batches(count, device="cpu"):
        return x[:count].float().contiguous()
    raise ExportError("the study's validation split is empty: nothing to check the exported model on")





def _printer(console: Any) -> Callable[[str], None]:
    if console is None:
        return lambda text: None
    return lambda text: console.print(text, markup=False, highlight=False)


def _epoch_printer(say: Callable[[str], None]) -> Callable[[int, int, float], None]:
    return lambda epoch, epochs, loss: say(f"  epoch {epoch}/{epochs}: loss {loss:.4f}")


def _epochs(n: Any) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"
