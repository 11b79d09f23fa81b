"""What a model costs: parameters, multiply-accumulates (MACs) and latency.

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

import statistics
import time
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch
from torch import nn

from ._util import preserved_modes
from .nn import use_form

__all__ = ["Cost", "profile", "latency", "macs_by_module", "count_params"]

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


def latency(
    model: nn.Module,
    input_size: Sequence[int] = (3, 32, 32),
    *,
    batch_size: int = 1,
    device: str | torch.device | None = None,
    repeats: int = 20,
    warmup: int = 3,
) -> float:
    """Median wall time in seconds of one inference forward pass on a batch, after warm-up."""
    inputs = _example_input(model, input_size, device, batch_size=batch_size)
    times: list[float] = []
    with preserved_modes(model, False), torch.inference_mode():
        for i in range(warmup + repeats):
            _synchronize(inputs.device)
            start = time.perf_counter()
            model(inputs)
            _synchronize(inputs.device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


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
