"""One recorded forward pass: which module was called when, with which tensor, returning which tensor.

:func:`pdenas.surgery.find_stages` reads a model's structure from its behaviour, not from class
names: it runs ``example_input`` once with a forward pre-hook and a forward hook on every module and
keeps, per module, the order of its first call, how often it was called, and its input and output
tensors. The model is left exactly as it was (hooks removed, every module's train/eval flag restored).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from .._util import first_line, preserved_modes

__all__ = ["ExampleInputError", "Call", "Trace", "trace", "feeds", "output_shapes"]

# How many single-input autograd nodes (F.relu, x * 2, ...) may sit between two modules that still
# count as "one feeds the next".
_MAX_FUNCTIONAL_HOPS = 4


class ExampleInputError(ValueError):
    """The model could not run on the example input."""


@dataclass
class Call:
    """What one module did during the traced forward pass (its first call)."""

    orders: list[int] = field(default_factory=list)  # positions of its calls among all module calls
    inp: Tensor | None = None  # the single positional tensor argument, else None
    out: Tensor | None = None  # the tensor returned, else None
    simple: bool = False  # called as module(tensor) -> tensor

    @property
    def order(self) -> int:
        return self.orders[0]

    @property
    def calls(self) -> int:
        return len(self.orders)

    @property
    def in_shape(self) -> tuple[int, ...] | None:
        return tuple(self.inp.shape) if self.inp is not None else None

    @property
    def out_shape(self) -> tuple[int, ...] | None:
        return tuple(self.out.shape) if self.out is not None else None


@dataclass
class Trace:
    """The calls of one forward pass, by module identity, and the model's output shapes."""

    calls: dict[int, Call] = field(default_factory=dict)  # id(module) -> Call
    output_shapes: Any = None

    def of(self, module: nn.Module) -> Call | None:
        return self.calls.get(id(module))


def trace(model: nn.Module, example_input: Tensor) -> Trace:
    """Run ``model(example_input)`` once in eval mode with hooks on every module.

    Eval mode keeps batch norm statistics untouched; autograd stays on so that :func:`feeds` can
    follow functional glue (``F.relu`` between two modules) through ``grad_fn``.
    """
    if not isinstance(example_input, Tensor):
        raise ExampleInputError(
            f"example_input must be a tensor such as torch.randn(2, 3, 32, 32), got {type(example_input).__name__}"
        )
    result = Trace()
    counter = itertools.count()
    handles = []
    for module in _unique_modules(model):
        handles.append(module.register_forward_pre_hook(_pre_hook(result, counter), with_kwargs=True))
        handles.append(module.register_forward_hook(_post_hook(result)))
    try:
        with preserved_modes(model, False), torch.enable_grad():
            output = model(_tracked(example_input))
    except Exception as err:  # noqa: BLE001 - any failure of the user's model becomes one line
        raise ExampleInputError(
            f"the model failed on example_input of shape {tuple(example_input.shape)}: "
            f"{type(err).__name__}: {first_line(err)}; pass an input the model accepts "
            "(batch, channels, height, width)"
        ) from None
    finally:
        for handle in handles:
            handle.remove()
    result.output_shapes = output_shapes(output)
    return result



def feeds(source: Tensor | None, target: Tensor | None) -> bool:
    """Whether ``target`` is ``source``, or was computed from it alone by a few functional steps.

    Identity covers ``nn.Sequential`` and in-place activations; the ``grad_fn`` walk covers
    ``x = self.conv2(F.relu(self.bn1(x)))`` in a hand-written forward. A step with two tensor
    inputs (a residual add, even of a constant tensor) ends the walk: the target then depends on
    more than the source.
    """
    if source is None or target is None:
        return False
    if target is source:
        return True
    if _same_storage_view(source, target):
        return True
    goal, node = source.grad_fn, target.grad_fn
    if goal is None or node is None:
        return False
    for _ in range(_MAX_FUNCTIONAL_HOPS):
        if len(node.next_functions) != 1:  # more than one input, even a constant one: not a pure step
            return False
        node = node.next_functions[0][0]
        if node is None:
            return False
        if node is goal:
            return True
    return False


def output_shapes(output: Any) -> Any:
    """The shapes of a model output (a tensor, or tuples/lists/dicts of tensors)."""
    if isinstance(output, Tensor):
        return tuple(output.shape)
    if isinstance(output, (tuple, list)):
        return tuple(output_shapes(o) for o in output)
    if isinstance(output, dict):
        return {k: output_shapes(v) for k, v in output.items()}
    return type(output).__name__


def _tracked(example_input: Tensor) -> Tensor:
    """The input as a non-leaf tensor that requires grad, so that every activation has a grad_fn
    for :func:`feeds` even when the model's parameters are frozen (non-leaf: in-place ops stay legal)."""
    if not example_input.is_floating_point():
        return example_input
    return example_input.detach().requires_grad_(True).clone()


def _unique_modules(model: nn.Module) -> Iterator[nn.Module]:
    seen: set[int] = set()
    for module in model.modules():
        if id(module) not in seen:
            seen.add(id(module))
            yield module


def _pre_hook(result: Trace, counter: Iterator[int]):
    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        call = result.calls.get(id(module))
        if call is None:
            single = len(args) == 1 and not kwargs and isinstance(args[0], Tensor)
            call = result.calls[id(module)] = Call(inp=args[0] if single else None, simple=single)
        call.orders.append(next(counter))

    return hook


def _post_hook(result: Trace):
    def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        call = result.calls[id(module)]
        if call.calls == 1:
            call.out = output if isinstance(output, Tensor) else None
            call.simple = call.simple and call.out is not None

    return hook


def _same_storage_view(a: Tensor, b: Tensor) -> bool:
    try:
        return a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride() and a.data_ptr() != 0
    except RuntimeError:  # tensors without storage (meta, some subclasses)
        return False
