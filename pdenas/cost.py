"""What a model costs: parameters, multiply-accumulates (MACs) and latency.

Latency is measured in the runtime the model will be deployed to (:func:`measure_latency`): eager
PyTorch, a TorchScript trace, ONNX Runtime or an AOTInductor package, at a batch size and a thread
count, timed with ``torch.utils.benchmark.Timer`` (warm-up, then blocks of runs; the median per run).

Two MAC figures are reported:

* ``conv_macs``: what fvcore's ``FlopCountAnalysis`` counts out of the box (convolutions, linear
  layers, batch norm, pooling). It is the figure comparable with the paper (Kag & Saligrama,
  CVPR 2022, Table 1) and with thop.
* ``macs``: the honest total. fvcore counts elementwise ``aten::mul``/``add``/``sub``/``div`` as zero,
  so out of the box a Global layer with K = 5 costs as much as with K = 1. Here each elementwise
  multiply, add, subtract or divide costs one MAC per output element, so the solver's iterations
  (Eq. 8) are paid for.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import statistics
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from ._util import preserved_modes
from .nn import use_form

__all__ = [
    "RUNTIMES", "Cost", "Latency", "LatencyError", "Runtime", "check_runtime", "count_params", "latency",
    "macs_by_module", "measure_latency", "profile", "time_call",
]

Runtime = Literal["torch", "torchscript", "onnxruntime", "aoti"]
WARMUP_CALLS = 3  # before timing: TorchScript's profiling executor optimizes a loaded file on its 2nd and 3rd calls
RUNTIMES: tuple[str, ...] = ("torch", "torchscript", "onnxruntime", "aoti")

# Elementwise arithmetic that fvcore leaves uncounted; each costs one MAC per output element.
_ELEMENTWISE_OPS = (
    "aten::add", "aten::add_", "aten::sub", "aten::sub_", "aten::rsub",
    "aten::mul", "aten::mul_", "aten::div", "aten::div_", "aten::reciprocal",
)


@dataclass(frozen=True)
class Cost:
    """Cost of one forward pass of one input sample."""

    params: int
    macs: int
    conv_macs: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def count_params(model: nn.Module) -> int:
    """Number of parameters (shared tensors counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def profile(model: nn.Module, input_size: Sequence[int] = (3, 32, 32), *, device: str | torch.device | None = None) -> Cost:
    """Parameters and MACs of ``model`` for one input of shape ``input_size`` (C, H, W)."""
    example = _example_input(model, input_size, device)
    honest = _analysis(model, example, elementwise=True)
    plain = _analysis(model, example, elementwise=False)
    return Cost(params=count_params(model), macs=int(honest.total()), conv_macs=int(plain.total()))


def macs_by_module(model: nn.Module, example_input: torch.Tensor) -> dict[str, int]:
    """Honest MACs per module path ('' for the whole model) for ``example_input``, per sample."""
    batch = max(int(example_input.shape[0]), 1)
    counts = _analysis(model, example_input, elementwise=True).by_module()
    return {name: int(value) // batch for name, value in counts.items()}


class LatencyError(RuntimeError):
    """A latency could not be measured in the runtime asked for; the one-line message says why and what to do."""


@dataclass(frozen=True)
class Latency:
    """The median time of one inference call and what was measured.

    Attributes:
        median_ms: median milliseconds per call (one batch), after warm-up.
        runtime: "torch" (eager), "torchscript", "onnxruntime" or "aoti" (see :data:`RUNTIMES`).
        batch_size: images per call.
        threads: intra-op threads of the runtime.
        device: where it ran ("cpu", "cuda:0", ...).
        runs: calls timed (in blocks; the median is over blocks, per call).
    """

    median_ms: float
    runtime: str
    batch_size: int
    threads: int
    device: str
    runs: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_latency(
    model: nn.Module,
    input_size: Sequence[int] = (3, 32, 32),
    *,
    runtime: Runtime = "torch",
    batch_size: int = 1,
    threads: int | None = None,
    device: str | torch.device | None = None,
    min_run_time: float = 0.2,
) -> Latency:
    """Median latency of an inference call of ``model`` on a batch of ``batch_size`` inputs of shape
    ``input_size`` (C, H, W), run as ``runtime`` with ``threads`` intra-op threads.

    ``"torch"`` times the model itself (eval mode, ``torch.inference_mode``); ``"torchscript"``,
    ``"onnxruntime"`` and ``"aoti"`` first write the model with :mod:`pdenas.export`'s writers to a
    temporary file (the AOTInductor package compiles C++: about a minute) and time that file in its
    runtime (onnxruntime: an ``InferenceSession`` with ``intra_op_num_threads``). Timing:
    ``torch.utils.benchmark.Timer.blocked_autorange`` for at least ``min_run_time`` seconds after
    :data:`WARMUP_CALLS` warm-up calls. ``threads`` defaults to ``torch.get_num_threads()``. Every module keeps its train/eval
    flag afterwards.

    Raises:
        LatencyError: an unknown runtime, a runtime that is not installed (onnxruntime: ``pip install
            'pdenas[onnx]'``), a model the runtime's writer cannot export, or bad sizes.
    """
    check_runtime(runtime)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise LatencyError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    _check_threads(threads)
    threads = threads or torch.get_num_threads()
    inputs = _example_input(model, input_size, device, batch_size=batch_size)
    if runtime == "onnxruntime" and inputs.device.type != "cpu":
        raise LatencyError(f"runtime 'onnxruntime' runs on the CPU here; the model is on {inputs.device}: pass device='cpu'")
    with preserved_modes(model, False), _torch_threads(threads), tempfile.TemporaryDirectory(prefix="pdenas-latency-") as folder:
        call = _runner(model, inputs, runtime, threads, Path(folder))
        return time_call(call, runtime=runtime, batch_size=batch_size, threads=threads, device=inputs.device,
                         min_run_time=min_run_time)


def time_call(
    call: Callable[[], Any],
    *,
    runtime: str,
    batch_size: int,
    threads: int | None = None,
    device: str | torch.device = "cpu",
    min_run_time: float = 0.2,
) -> Latency:
    """Time ``call``, one inference of a batch of ``batch_size`` already set up in ``runtime`` (a loaded
    file, a session), as :func:`measure_latency` times its own: :data:`WARMUP_CALLS` warm-up calls, then
    ``torch.utils.benchmark.Timer.blocked_autorange`` for at least ``min_run_time`` seconds with ``threads``
    torch threads (default ``torch.get_num_threads()``; an onnxruntime session sets its own)."""
    _check_threads(threads)
    threads = threads or torch.get_num_threads()
    with _torch_threads(threads):
        for _ in range(WARMUP_CALLS):  # first-call allocations, oneDNN primitives, ORT's arena, TorchScript's profiling runs
            call()
        timer = _timer_class()(stmt="call()", globals={"call": call}, num_threads=threads)
        measured = timer.blocked_autorange(min_run_time=min_run_time)
    return Latency(
        median_ms=measured.median * 1e3, runtime=runtime, batch_size=batch_size, threads=threads,
        device=str(device), runs=measured.number_per_run * len(measured.times),
    )


def check_runtime(runtime: str) -> None:
    """Refuse, before any work, an unknown runtime or one that cannot run here (:class:`LatencyError`, one
    line): ``onnxruntime`` needs the onnxruntime package, ``aoti`` a C++ compiler to compile the model."""
    if runtime not in RUNTIMES:
        raise LatencyError(f"unknown runtime {runtime!r}; known: {', '.join(RUNTIMES)}")
    if runtime == "onnxruntime":
        try:
            import onnxruntime  # type: ignore[import-untyped,unused-ignore]  # noqa: F401
        except ImportError:
            raise LatencyError("runtime 'onnxruntime' needs onnxruntime: pip install 'pdenas[onnx]'") from None
    if runtime == "aoti" and not any(shutil.which(cxx) for cxx in (os.environ.get("CXX") or "g++", "c++", "clang++")):
        raise LatencyError("runtime 'aoti' compiles the model with a C++ compiler, and none was found (g++, c++, clang++ or $CXX): "
                           "install one, or use another runtime")


def _check_threads(threads: int | None) -> None:
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise LatencyError(f"threads must be a whole number >= 1, got {threads!r}")


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _runner(model: nn.Module, inputs: torch.Tensor, runtime: str, threads: int, folder: Path) -> Callable[[], Any]:
    """A no-argument call that runs one inference of ``inputs`` in ``runtime`` (writing the file it needs)."""
    from .export import ExportError, aoti_runner, export_aoti, export_onnx, export_torchscript, onnx_session

    sync = _synchronize if inputs.device.type == "cuda" else (lambda device: None)
    try:
        if runtime == "torch":
            def run_torch() -> None:
                with torch.inference_mode():
                    model(inputs)
                sync(inputs.device)

            return run_torch
        if runtime == "torchscript":
            export_torchscript(model, folder / "model.pt", inputs)
            scripted = torch.jit.load(str(folder / "model.pt"), map_location=inputs.device)
            return _no_grad_call(scripted, inputs, sync)
        if runtime == "aoti":
            export_aoti(model, folder / "model.pt2", inputs)
            return _no_grad_call(aoti_runner(folder / "model.pt2"), inputs, sync)
        export_onnx(model, folder / "model.onnx", inputs)
        session = onnx_session(folder / "model.onnx", threads=threads)
    except ExportError as err:
        raise LatencyError(f"cannot measure the latency in {runtime}: {err}") from None
    feed = {session.get_inputs()[0].name: inputs.numpy()}
    return lambda: session.run(None, feed)


def _no_grad_call(fn: Callable[[torch.Tensor], Any], inputs: torch.Tensor, sync: Callable[[torch.device], None]) -> Callable[[], None]:
    def run() -> None:
        with torch.no_grad():
            fn(inputs)
        sync(inputs.device)

    return run


def latency(
    model: nn.Module,
    input_size: Sequence[int] = (3, 32, 32),
    *,
    batch_size: int = 1,
    device: str | torch.device | None = None,
    repeats: int = 20,
    warmup: int = 3,
) -> float:
    """Median wall time in seconds of one eager inference forward pass on a batch, after ``warmup`` calls,
    over ``repeats`` calls each timed with ``torch.utils.benchmark.Timer``.

    Eager PyTorch only (kept for callers of pdenas 0.1.0); :func:`measure_latency` measures in any runtime,
    and is what the search, the export and ``pdenas evaluate`` use.
    """
    inputs = _example_input(model, input_size, device, batch_size=batch_size)
    sync = _synchronize if inputs.device.type == "cuda" else (lambda device: None)

    def call() -> None:
        with torch.inference_mode():
            model(inputs)
        sync(inputs.device)

    with preserved_modes(model, False):
        for _ in range(warmup):
            call()
        timer = _timer_class()(stmt="call()", globals={"call": call}, num_threads=torch.get_num_threads())
        return statistics.median(timer.timeit(1).median for _ in range(repeats))


def _timer_class() -> Any:
    """``torch.utils.benchmark.Timer``, imported on first use: its import loads ``torch.utils.cpp_extension``,
    which logs a warning about CUDA_HOME on machines without CUDA (not ours to show)."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        from torch.utils.benchmark import Timer
    finally:
        logger.setLevel(level)
    return Timer


def _analysis(model: nn.Module, example: torch.Tensor, *, elementwise: bool) -> Any:
    with warnings.catch_warnings():  # fvcore scripts a helper at import; torch 2.x calls that deprecated
        warnings.simplefilter("ignore", FutureWarning)
        from fvcore.nn import FlopCountAnalysis

    with preserved_modes(model, False), use_form("plain"):  # Global layers as the scheme's plain operations
        analysis = FlopCountAnalysis(model, example)
        if elementwise:
            analysis.set_op_handle(**{op: _elementwise_macs for op in _ELEMENTWISE_OPS})
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        analysis.tracer_warnings("none")
        with torch.no_grad():
            analysis.total()  # runs the trace now, in eval mode
    return analysis



def _elementwise_macs(inputs: list[Any], outputs: list[Any]) -> int:
    from fvcore.nn.jit_handles import get_shape

    shape = get_shape(outputs[0])
    if shape is None:
        return 0
    count = 1
    for dim in shape:
        count *= int(dim)
    return count


def _example_input(
    model: nn.Module, input_size: Sequence[int], device: str | torch.device | None, *, batch_size: int = 1
) -> torch.Tensor:
    if device is None:
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
    return torch.randn(batch_size, *input_size, device=device)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
