"""The forms a Global layer can run in (Kag & Saligrama, CVPR 2022, Sec. 3.2), and the context that picks
the one a trace or an export records.

Every form computes the same numbers (to float32 rounding); they differ in the operations a runtime sees:

* ``"plain"``: the coefficient branches as modules (conv, BN, ReLU) and the solver as plain tensor
  operations with ``torch.roll`` (:func:`pdenas.nn.functional.global_pde_unfused`). Every elementwise
  multiply-add of the scheme is an operation, which is what MAC counting (:mod:`pdenas.cost`) needs, and
  what ``torch.export``/``torch.compile`` fuse into a few loops (AOTInductor); also any traced training.
* ``"fused"``: the eager path: folded BNs, in-place passes over shifted views (:mod:`pdenas.nn._fast_pde`).
  The fastest in PyTorch, so also what a TorchScript trace records.
* ``"conv"``: the short inference form of :mod:`pdenas.nn._inference` (periodic stencils as depthwise
  convolutions, constants folded), which ONNX Runtime runs in a handful of fused passes.

Without a request, ONNX export records ``"conv"``, ``torch.jit.trace`` (TorchScript) ``"fused"`` and
``torch.export`` ``"plain"``; :func:`traced_form` overrides that for a block of code (:mod:`pdenas.cost`
counts MACs on ``"plain"``).
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from typing import Iterator, Literal

__all__ = ["FORMS", "TracedForm", "traced_form", "requested_form"]

TracedForm = Literal["plain", "fused", "conv"]
FORMS: tuple[str, ...] = ("plain", "fused", "conv")

_requested: ContextVar[str | None] = ContextVar("pdenas_traced_form", default=None)


@contextlib.contextmanager
def traced_form(form: TracedForm) -> Iterator[None]:
    """Inside the block, Global layers in eval mode that are traced (``torch.jit.trace``) or exported to
    ONNX record ``form`` (one of :data:`FORMS`); see the module docstring."""
    if form not in FORMS:
        raise ValueError(f"unknown Global layer form {form!r}; known: {', '.join(FORMS)}")
    token = _requested.set(form)
    try:
        yield
    finally:
        _requested.reset(token)


def requested_form() -> str | None:
    """The form asked for by an enclosing :func:`traced_form`, or None."""
    return _requested.get()
