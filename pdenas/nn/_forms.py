"""The forms a Global layer can run in (Kag & Saligrama, CVPR 2022, Sec. 3.2), and the context that picks one.

Every form computes the same numbers (to float32 rounding); they differ in the operations a runtime sees:

* ``"plain"``: the coefficient branches as modules (conv, BN, ReLU) and the solver as plain tensor
  operations with ``torch.roll`` (:func:`pdenas.nn.functional.global_pde_unfused`). Every elementwise
  multiply-add of the scheme is an operation, which is what MAC counting (:mod:`pdenas.cost`) needs, and
  what ``torch.export``/``torch.compile`` fuse into a few loops (AOTInductor); also any traced training.
* ``"fused"``: the eager path: folded BNs, in-place passes over shifted views (:mod:`pdenas.nn._fast_pde`).
  The fastest in PyTorch, so also what a TorchScript trace records.
* ``"conv"``: the short inference form of :mod:`pdenas.nn._inference` (periodic stencils as depthwise
  convolutions, constants folded), which ONNX Runtime runs in a handful of fused passes, each C wide:
  the form for large batches, where memory passes cost.
* ``"compact"``: the fewest operations (:mod:`pdenas.nn._compact`: every kind of work one grouped
  convolution over all the scheme's terms, intermediates several times C wide): the form for batch 1,
  where each operation's fixed cost is what costs. Layers it does not apply to (K > 1, a constant
  diffusion) run ``"conv"``.

Without a request, eager eval and ``torch.jit.trace`` (TorchScript) run ``"fused"``, ONNX export records
``"conv"`` and ``torch.export`` ``"plain"``. :func:`use_form` overrides that for Global layers in eval mode
inside a block of code, eager or traced: :mod:`pdenas.cost` counts MACs on ``"plain"``, and the export
writers run the model once in the form they export before tracing it, so that the folded constants are
built outside the trace and recorded as constants.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Literal

__all__ = ["FORMS", "Form", "requested_form", "use_form"]

Form = Literal["plain", "fused", "conv", "compact"]
FORMS: tuple[str, ...] = ("plain", "fused", "conv", "compact")

_requested: ContextVar[str | None] = ContextVar("pdenas_global_layer_form", default=None)


@contextlib.contextmanager
def use_form(form: Form) -> Iterator[None]:
    """Inside the block, Global layers in eval mode run ``form`` (one of :data:`FORMS`), eagerly, traced
    by ``torch.jit.trace`` or exported to ONNX; see the module docstring."""
    if form not in FORMS:
        raise ValueError(f"unknown Global layer form {form!r}; known: {', '.join(FORMS)}")
    token = _requested.set(form)
    try:
        yield
    finally:
        _requested.reset(token)


def requested_form() -> str | None:
    """The form asked for by an enclosing :func:`use_form`, or None."""
    return _requested.get()
