"""Writing a model to a deployable file and running that file: TorchScript (``torch.jit.trace``), ONNX
(the TorchScript-based exporter, falling back to the ``torch.export``-based one; run with onnxruntime, or
with ``onnx``'s reference evaluator where onnxruntime is missing) and an AOTInductor package
(``torch.export`` compiled ahead of time to C++ with the elementwise work fused, run with
``torch._inductor.aoti_load_package``). None of the files needs pdenas to run.

Each writer takes ``metadata`` (string keys and values) and stores it where its format keeps such
things: the ONNX file's ``metadata_props``, the TorchScript file's extra files (``_extra_files``), the
AOTInductor package's metadata (``aot_inductor.metadata``, read with ``get_metadata()``). ``pdenas export``
stores the model card there (:mod:`pdenas.export._card`).

Every writer replaces its file atomically: a crash leaves the old file or none, never half of one.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import shutil
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from .._util import atomic_write, first_line, preserved_modes
from ..cost import LatencyError, check_runtime
from ..nn import Form, requested_form, use_form
from ._errors import ExportError

__all__ = [
    "aoti_runner",
    "CHECK_BATCH",
    "COMPACT_MAX_BATCH",
    "check_formats",
    "export_aoti",
    "export_onnx",
    "export_torchscript",
    "max_abs_diff",
    "ONNX_OPSET",
    "ONNX_OPSET_DYNAMO",
    "onnx_form",
    "onnx_runner",
    "onnx_session",
    "quiet",
]

ONNX_OPSET = 17  # the TorchScript-based exporter's; the torch.export-based one writes its own, 18
ONNX_OPSET_DYNAMO = 18
CHECK_BATCH = 8  # images an exported file is checked on (2 with the ONNX reference evaluator)
# The largest batch for which export_onnx's "auto" writes the compact form (fewest operations, 4-7C wide).
# 0: never. Measured with benchmarks/bench_runtimes.py (ONNX Runtime 1.32, 1 and 2 threads, CPU time;
# benchmarks/RESULTS.md, issue 14): the compact form is slower than the narrow one at batch 1 too
# (keep-1 + Global resnet32: 0.70 against 0.40 ms at 1 thread, 1.69 against 1.01 ms at 2), because its
# wide operations cost more work than the ~17 operations it saves per layer cost in fixed overhead.
COMPACT_MAX_BATCH = 0


@contextlib.contextmanager
def quiet() -> Any:
    """Silence the exporters' deprecation and tracer warnings and their progress prints."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def check_formats(formats: tuple[str, ...]) -> None:
    """Refuse, before any work, a format whose packages are missing: ONNX needs ``onnx`` to write the file
    (and to check it, where onnxruntime is missing), an AOTInductor package a C++ compiler."""
    if "onnx" in formats:
        try:
            import onnx  # noqa: F401
        except ImportError:
            raise ExportError("--format onnx needs the onnx package, which is not installed: pip install 'pdenas[onnx]' "
                              "(onnx, onnxscript, onnxruntime), or export without --format onnx") from None
    if "aoti" in formats:
        try:
            check_runtime("aoti")
        except LatencyError as err:
            raise ExportError(f"--format aoti: {err}") from None


def export_torchscript(model: nn.Module, path: str | Path, example: Tensor, *, metadata: Mapping[str, str] | None = None) -> None:
    """Trace ``model`` on ``example`` and save it at ``path`` (loadable with ``torch.jit.load``, without pdenas);
    ``metadata`` becomes its extra files (``torch.jit.load(path, _extra_files={key: ""})`` reads them back).

    Global layers in eval mode are recorded in their fused eager form (:mod:`pdenas.nn._forms`) with their
    folded constants; a small batch records the path for small feature maps (``torch.roll`` shifts, one
    grouped convolution), a large one the path for large maps: trace with the batch size you deploy.
    """
    path = Path(path)
    try:
        with quiet(), torch.no_grad():
            _warm_up(model, example, "fused")
            traced = torch.jit.trace(model, example, check_trace=False)
            # an inference file: the fused passes write into buffers (out=), which autograd refuses when a
            # weight requires grad, as it would in a caller's forward without torch.no_grad()
            for param in traced.parameters():
                param.requires_grad_(False)
            extra = dict(metadata or {})
            atomic_write(path, lambda tmp: torch.jit.save(traced, str(tmp), _extra_files=extra))
    except Exception as err:  # noqa: BLE001
        raise ExportError(f"TorchScript export failed: {type(err).__name__}: {first_line(err)}") from None


def export_onnx(
    model: nn.Module,
    path: str | Path,
    example: Tensor,
    *,
    say: Callable[[str], None] | None = None,
    exporter: Literal["auto", "torchscript", "dynamo"] = "auto",
    metadata: Mapping[str, str] | None = None,
    form: Literal["auto", "conv", "compact"] = "auto",
    batch_size: int | None = None,
) -> str:
    """Write ``model`` as ONNX at ``path`` (input ``input``, output ``logits``, dynamic batch); returns the
    exporter used: "torchscript" (dynamo=False), else "dynamo" (when the first fails; ``say`` is told why).
    ``exporter`` names one of the two to use only that one. ``metadata`` goes into the file's
    ``metadata_props`` (needs the onnx package; onnxruntime reads it as
    ``session.get_modelmeta().custom_metadata_map``).

    Global layers in eval mode are written in an inference form specific to ``example``'s height and
    width (:mod:`pdenas.nn._forms`): ``form="conv"``, about 31 operations per layer each C channels wide
    (:mod:`pdenas.nn._inference`), or ``"compact"``, 9 to 15 operations with intermediates 4 to 7 times C
    wide (:mod:`pdenas.nn._compact`), for runtimes where an operation's fixed cost outweighs its work. The
    file takes any batch size either way; ``"auto"`` writes the compact form for a ``batch_size`` (the batch
    the file will mostly run at; default ``example``'s) up to :data:`COMPACT_MAX_BATCH`, which measurement
    in ONNX Runtime on the CPU set to 0 (the narrow form is faster at batch 1 too), unless an enclosing
    :func:`pdenas.nn.use_form` asks for a form.
    """
    if exporter not in ("auto", "torchscript", "dynamo"):
        raise ExportError(f"unknown ONNX exporter {exporter!r}; use 'auto', 'torchscript' or 'dynamo'")
    requested = requested_form()
    if form == "auto" and requested is not None:
        chosen: Form = requested  # type: ignore[assignment]
    else:
        chosen = onnx_form(form, example.shape[0] if batch_size is None else batch_size)
    path = Path(path)
    with quiet(), torch.no_grad():
        _warm_up(model, example, chosen)
    errors: list[str] = []
    for name in ("torchscript", "dynamo") if exporter == "auto" else (exporter,):
        write = functools.partial(_write_onnx, model, example, dynamo=name == "dynamo", metadata=metadata)
        try:
            with quiet(), use_form(chosen):
                atomic_write(path, write)
            if errors and say is not None:
                say(f"the TorchScript-based ONNX exporter failed ({errors[0]}); used the torch.export-based one (dynamo=True)")
            return name
        except Exception as err:  # noqa: BLE001 - try the other exporter
            errors.append(f"{name}: {type(err).__name__}: {first_line(err)}")
    tried = "both exporters" if len(errors) > 1 else "the exporter asked for"
    raise ExportError(f"ONNX export failed with {tried} ({'; '.join(errors)}); is the onnx extra installed "
                      "(pip install 'pdenas[onnx]')?")


def onnx_form(form: str, batch_size: int) -> Form:
    """The Global layers' form :func:`export_onnx` writes for ``form`` ("auto", "conv", "compact") and a file
    meant for ``batch_size`` images per call."""
    if form not in ("auto", "conv", "compact"):
        raise ExportError(f"unknown ONNX form {form!r}; use 'auto', 'conv' (large batches) or 'compact' (batch 1)")
    if form != "auto":
        return form  # type: ignore[return-value]
    return "compact" if batch_size <= COMPACT_MAX_BATCH else "conv"


def export_aoti(
    model: nn.Module, path: str | Path, example: Tensor, *, max_batch: int = 4096, metadata: Mapping[str, str] | None = None
) -> None:
    """Compile ``model`` ahead of time with AOTInductor into a ``.pt2`` package at ``path``.

    ``torch.export`` (dynamic batch, 1 to ``max_batch``; height and width fixed to ``example``'s), then
    ``torch._inductor.aoti_compile_and_package`` with freezing on: the weights become constants, BatchNorms
    are folded into the convolutions and the elementwise work (the Global layers' solver, recorded in
    their plain form) is fused into generated C++ loops. It compiles C++ (a C++ compiler must be
    installed) and takes about a minute; run the package with :func:`aoti_runner` or, without pdenas,
    ``torch._inductor.aoti_load_package(path)(x)``; ``metadata`` is compiled in (``.get_metadata()`` of the
    loaded package returns it, with AOTInductor's own keys).
    """
    path = Path(path)
    if path.suffix != ".pt2":
        raise ExportError(f"an AOTInductor package must be named *.pt2, got {path.name}")
    # torch.export specialises a dimension of size 1: export on at least two images
    example = example if example.shape[0] > 1 else example.expand(2, *example.shape[1:]).contiguous()
    try:
        with quiet(), torch.no_grad(), preserved_modes(model, False):
            batch = torch.export.Dim("batch", min=1, max=max(max_batch, 2))
            program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
            with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as folder:
                # compiled under its own name (the package's folder inside is named after the file), then moved
                configs: dict[str, Any] = {"freezing": True}
                if metadata:
                    configs["aot_inductor.metadata"] = dict(metadata)
                built = torch._inductor.aoti_compile_and_package(
                    program, package_path=str(Path(folder) / path.name), inductor_configs=configs
                )
                atomic_write(path, lambda tmp: shutil.copyfile(built, tmp))
    except Exception as err:  # noqa: BLE001
        raise ExportError(f"AOTInductor export failed: {type(err).__name__}: {first_line(err)}") from None


def aoti_runner(path: str | Path) -> Callable[[Tensor], Tensor]:
    """The compiled model of an AOTInductor package written by :func:`export_aoti` (call it with a batch)."""
    try:
        with quiet():
            compiled = torch._inductor.aoti_load_package(str(path))
    except Exception as err:  # noqa: BLE001
        raise ExportError(f"cannot load the AOTInductor package {path}: {type(err).__name__}: {first_line(err)}") from None
    return compiled


def _warm_up(model: nn.Module, example: Tensor, form: Form) -> None:
    """Run an eval-mode ``model`` once in ``form`` so that its Global layers build their folded constants
    here, not inside the trace (where building them would be recorded and redone at every call)."""
    if not any(m.training for m in model.modules()):
        with use_form(form):
            model(example)


def _write_onnx(model: nn.Module, example: Tensor, path: Path, *, dynamo: bool, metadata: Mapping[str, str] | None) -> None:
    onnx_export_once(model, example, path, dynamo=dynamo)
    if metadata:
        import onnx

        proto = onnx.load(str(path))
        props = {entry.key: entry.value for entry in proto.metadata_props}
        onnx.helper.set_model_props(proto, {**props, **metadata})
        onnx.save(proto, str(path))


def onnx_export_once(model: nn.Module, example: Tensor, path: Path, *, dynamo: bool) -> None:
    names: dict[str, Any] = {"input_names": ["input"], "output_names": ["logits"]}
    if dynamo:
        batch = torch.export.Dim("batch", min=1)
        torch.onnx.export(model, (example,), str(path), dynamo=True, dynamic_shapes=({0: batch},), verbose=False,
                          opset_version=ONNX_OPSET_DYNAMO, external_data=False, **names)
    else:
        torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=ONNX_OPSET,
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, **names)


def onnx_session(path: str | Path, *, threads: int | None = None) -> Any:
    """An onnxruntime ``InferenceSession`` of the file ``path`` on the CPU, with ``threads`` intra-op threads
    (default: onnxruntime's own choice) and one inter-op thread."""
    try:
        import onnxruntime as ort  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        raise ExportError("running an ONNX file needs onnxruntime: pip install 'pdenas[onnx]'") from None
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_runner(path: str | Path) -> tuple[Callable[[Any], Any], str, int]:
    """(run(numpy input) -> numpy logits, the runtime's name, how many images to check on)."""
    try:
        import onnxruntime as ort  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        ort = None
    if ort is not None:
        session = onnx_session(path)
        return (lambda x: session.run(None, {"input": x})[0]), f"onnxruntime {ort.__version__}", CHECK_BATCH
    try:
        from onnx.reference import ReferenceEvaluator
    except ImportError:
        raise ExportError(f"{path} was written but cannot be checked: install onnxruntime or onnx "
                          "(pip install 'pdenas[onnx]')") from None
    evaluator = ReferenceEvaluator(str(path))

    def run(x: Any) -> Any:
        outputs: Any = evaluator.run(None, {"input": x})
        return outputs[0]

    return run, "onnx.reference.ReferenceEvaluator", 2


def max_abs_diff(a: Tensor, b: Tensor) -> float:
    """The largest absolute difference of two outputs (inf when their shapes differ)."""
    if a.shape != b.shape:
        return math.inf
    return float((a.float() - b.float()).abs().max()) if a.numel() else 0.0
