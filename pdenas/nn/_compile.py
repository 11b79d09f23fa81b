"""Optional ``torch.compile`` of the Global layer (Kag & Saligrama, CVPR 2022, Sec. 3.2).

In eval mode the whole layer (coefficient convolutions with folded BNs, the K steps of Eq. 8, the
output BN and ReLU) is compiled, so the compiler fuses the scheme's elementwise passes into a few
loops; in training the solver's forward and adjoint backward are compiled as two pure functions
(:mod:`pdenas.nn._compiled_pde`) between the eager convolutions and BatchNorms (compiling the whole
training graph was slower on CPU: inductor's BN/ReLU backward loops). It costs a compilation per
layer shape, per train/eval mode and per process (tens of seconds on a CPU the first time, a few
seconds from the on-disk cache), which a search that trains many short candidates pays again and
again; so it is a process-wide switch rather than a layer setting (:class:`~pdenas.nn.GlobalLayerConfig`
is stored in plans and must not depend on the machine):

* ``pdenas.nn.set_compile(True | False | "auto")``, or
* the environment variable ``PDENAS_COMPILE`` = ``1`` / ``0`` / ``auto``, read at import.

The default is off. On the 2-core CPU of ``benchmarks/RESULTS.md`` compiling ``resnet32_global``
takes about 35 s for inference and 30 s for training in a fresh process with an empty inductor
cache (3 to 12 s with a warm one), and lifts its speed-up over ``resnet32`` from 1.7x to 2.4-2.7x
(inference) and from 1.6x to 2.1-2.2x (training): it pays for a long training or a deployment, not
for a search that trains many short candidates of new shapes. ``"auto"`` compiles on CUDA devices
only (not measured here: there is no GPU on the benchmark machine).

Any failure to compile (no compiler, unsupported platform, a compiler bug) falls back to the
eager fused path with a single warning, and compilation is not tried again in the process.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Callable, Literal, Union

import torch
from .._util import first_line

__all__ = ["set_compile", "get_compile", "compile_enabled", "CompiledOrEager"]

CompileMode = Union[bool, Literal["auto"]]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _parse(value: object) -> CompileMode:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    if text == "auto":
        return "auto"
    raise ValueError(f"compile mode must be True, False or 'auto' (PDENAS_COMPILE=1/0/auto), got {value!r}")


_mode: CompileMode = _parse(os.environ.get("PDENAS_COMPILE", "0"))


def set_compile(mode: CompileMode) -> None:
    """Compile Global layers with ``torch.compile``: always, never, or ``"auto"`` (CUDA only)."""
    global _mode
    _mode = _parse(mode)


def get_compile() -> CompileMode:
    """The current process-wide compile mode."""
    return _mode


def compile_enabled(device: torch.device) -> bool:
    """Whether a layer running on ``device`` should take its compiled path now."""
    if _mode == "auto":
        return device.type == "cuda"
    return bool(_mode)


class CompiledOrEager:
    """``fn`` compiled on first use with ``torch.compile(dynamic=False)``, or ``fn`` itself after a failure.

    Compilation happens lazily on the first call; an exception raised by the compiler (or by a
    compiled call) is reported once as a warning, and this wrapper and every later call then run
    ``fn`` eagerly. An exception that ``fn`` raises eagerly too is the caller's own and propagates.
    """

    failed: bool = False  # class-wide: one failure disables compilation for the whole process

    def __init__(self, fn: Callable[..., Any], *, name: str) -> None:
        self.fn = fn
        self.name = name
        self._compiled: Callable[..., Any] | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if CompiledOrEager.failed:
            return self.fn(*args, **kwargs)
        try:
            if self._compiled is None:
                self._compiled = _compile(self.fn)
            return self._compiled(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - any compiler failure falls back to eager
            CompiledOrEager.failed = True
            warnings.warn(
                f"pdenas: torch.compile of {self.name} failed ({type(error).__name__}: {first_line(error, limit=200)}); "
                "running the eager fused path from now on (set PDENAS_COMPILE=0 to silence)",
                RuntimeWarning,
                stacklevel=2,
            )
            return self.fn(*args, **kwargs)


def _compile(fn: Callable[..., Any]) -> Callable[..., Any]:
    return torch.compile(fn, dynamic=False)
