"""Finding the stages of any CNN (Kag & Saligrama, CVPR 2022, Sec. 4: "a stage where the same block
repeats m times").

A *stage* is a run of at least 2 consecutive sibling blocks inside one container (an
``nn.Sequential``, an ``nn.ModuleList`` used in order, or any module whose children are called one
after the other) where every block after the first maps a (B, C, H, W) tensor to the same shape.
Stages are read from the model's behaviour on one example input (:mod:`._trace`), never from class
names:

* **Blocks are units of children.** In a container, a unit starts at a child that computes (it
  contains a convolution, a linear layer or another layer with a weight of rank >= 2) and absorbs
  the following children that compute nothing and keep the shape (batch norm, activation,
  dropout). A non-computing child that changes the shape (pooling, flatten) ends the run. So a
  ResNet stage is a run of residual blocks, and VGG's ``features`` is a list of conv-BN-ReLU units
  split into stages by its max-pools.
* **Data must flow from block to block.** A unit joins the run only if its input is the previous
  unit's output (the same tensor, or the result of a few single-input functional steps such as
  ``F.relu``). A child called more than once, called with other than one tensor, returning other
  than one tensor, or registered under two parents is never a block; it ends the run.
* **No nesting.** Containers are searched bottom-up. A child that holds a pdenas ``GlobalLayer``
  (or is one) is never a block. When a run of the parent competes with a stage inside one of its
  blocks, the inner stage wins only if it *is* that block (its first block takes the child's input
  and its last block gives the child's output, as ``layer1`` of a ResNet) and is at least as long
  as the parent's run; otherwise the parent's run wins and the inner stage is dropped. So a CIFAR
  ResNet's stem + ``layer1`` is not a stage (``layer1`` is), while the expand and depthwise
  convolutions inside a MobileNet inverted-residual block yield to the run of inverted-residual
  blocks around them.

What this finds (3x32x32 or 3x64x64 inputs; the names do not depend on the input size):

* CIFAR ResNets, WRN, torchvision ResNets and ConvNeXt: one stage per ``layerN`` /
  ``features.N`` of residual blocks. Zoo ``*_global`` models with one block per stage have none.
* VGG (``vgg11_bn``): ``features`` is a flat list of conv, BN, ReLU and max-pool layers. Each
  conv-BN-ReLU triple is one block and the max-pools split the runs, so the stages are
  ``features.8-13``, ``features.15-20`` and ``features.22-27``, each m = 2 (the 256- and the two
  512-channel pairs); the lone 64- and 128-channel convolutions are not stages. A plan keeping 1
  block keeps the first conv-BN-ReLU after each max-pool.
* MobileNet V2/V3: ``features.2-3``, ``features.4-6``, ... (runs of inverted-residual blocks at one
  resolution). EfficientNet and RegNet: one stage per ``features.N`` / ``trunk_output.blockN``.
* A block that stands alone in its resolution (EfficientNet ``features.1`` and ``features.7``,
  MobileNet V2 ``features.17``, V3 ``features.1``, RegNet ``block1``) may still hold a run inside:
  e.g. the depthwise convolution and squeeze-excitation after a 1x1 expansion keep the shape. These
  are stages too (named by their container, e.g. ``features.7.0.block``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from torch import Tensor, nn
from torch.nn.modules.conv import _ConvNd

from ..cost import count_params, macs_by_module
from ..nn import GlobalLayer
from ._trace import Call, Trace, feeds, trace

__all__ = ["Stage", "NoStagesError", "STAGE_DEFINITION", "find_stages", "find_stages_traced"]

STAGE_DEFINITION = (
    "a stage is a run of at least 2 consecutive sibling blocks (modules with a convolution) in one "
    "container where every block after the first keeps the (B, C, H, W) shape"
)

_NORMS: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm,
) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())
_WEIGHTED: tuple[type[nn.Module], ...] = (_ConvNd, nn.Linear, nn.Bilinear)


class NoStagesError(ValueError):
    """The model has no stage (no repeated shape-preserving blocks) to compress."""


@dataclass(frozen=True)
class Stage:
    """A run of ``m`` blocks of one container; the blocks after the first keep the shape.

    The first block may change the shape (the *transition* block: stride 2 or more channels);
    ``m`` counts it, so a plan's ``keep`` counts from it and ``keep = 1`` keeps only the transition
    block, as the paper does. ``channels``, ``height`` and ``width`` are the shape every block
    after the first takes and returns, for the example input given to :func:`find_stages`.

    Attributes:
        name: stable name of the stage: the container's dotted path (``layer2``) when the container
            holds one stage, ``<container>.<first child>-<last child>`` (``features.2-3``) when it
            holds several; for the model itself, ``model`` or ``<first>-<last>``.
        container: dotted path of the container ('' for the model itself).
        block_paths: one tuple per block of the dotted paths of its children: a block is a unit of
            sibling modules (a residual block ``('layer1.0',)``, or VGG's conv-BN-ReLU
            ``('features.11', 'features.12', 'features.13')``).
        channels, height, width: C, H, W of the stage's (B, C, H, W) tensor.
        m: number of blocks (``len(block_paths)``), the transition block included.
        block_macs: honest MACs per sample of one shape-preserving block (the second block).
        block_params: parameters of that block.
    """

    name: str
    container: str
    block_paths: tuple[tuple[str, ...], ...]
    channels: int
    height: int
    width: int
    m: int
    block_macs: int
    block_params: int

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["block_paths"] = [list(paths) for paths in self.block_paths]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Stage":
        fields = dict(data)
        fields["block_paths"] = tuple(tuple(paths) for paths in fields["block_paths"])
        return cls(**fields)


def find_stages(model: nn.Module, example_input: Tensor, *, macs: bool = True) -> list[Stage]:
    """The stages of ``model``, in forward order, found by running ``example_input`` once.

    Args:
        model: any CNN; it is not modified (eval mode during the pass, flags restored).
        example_input: a (B, C, H, W) batch the model accepts; B = 1 or 2 is enough.
        macs: measure ``block_macs`` with :func:`pdenas.cost.macs_by_module`; False sets it to 0 (faster).

    Raises:
        NoStagesError: the model has no stage.
        ExampleInputError: the model fails on ``example_input``.
    """
    stages, _ = find_stages_traced(model, example_input, macs=macs)
    return stages


def find_stages_traced(model: nn.Module, example_input: Tensor, *, macs: bool = True) -> tuple[list[Stage], Trace]:
    """:func:`find_stages` and the trace it read (used by :func:`pdenas.compress`)."""
    recorded = trace(model, example_input)
    runs = _Search(recorded, _parent_counts(model)).runs(model)
    if not runs:
        raise NoStagesError(_no_stages_message(model))
    macs_of = macs_by_module(model, example_input) if macs else {}  # honest MACs per module path, per sample
    names = _names(runs)
    return [_to_stage(run, name, model, macs_of) for run, name in zip(runs, names)], recorded


# --- the search -------------------------------------------------------------------------------


@dataclass
class _Child:
    name: str  # name inside its container ('3', 'layer1')
    path: str  # dotted path from the model
    module: nn.Module
    call: Call


@dataclass
class _Unit:
    """A block: a computing child and the shape-preserving, non-computing children after it."""

    children: list[_Child]

    @property
    def inp(self) -> Tensor | None:
        return self.children[0].call.inp

    @property
    def out(self) -> Tensor | None:
        return self.children[-1].call.out

    @property
    def in_shape(self) -> tuple[int, ...] | None:
        return self.children[0].call.in_shape

    @property
    def out_shape(self) -> tuple[int, ...] | None:
        return self.children[-1].call.out_shape


@dataclass
class _Run:
    container: str
    units: list[_Unit] = field(default_factory=list)

    @property
    def m(self) -> int:
        return len(self.units)

    @property
    def shape(self) -> tuple[int, ...] | None:
        return self.units[0].out_shape

    @property
    def is_stage(self) -> bool:
        return self.m >= 2 and self.shape is not None and len(self.shape) == 4

    @property
    def order(self) -> int:
        return self.units[0].children[0].call.order

    def fills(self, call: Call) -> bool:
        """Whether this run *is* the module of ``call``: its input enters the first block and the
        last block's output leaves the module."""
        return feeds(call.inp, self.units[0].inp) and feeds(self.units[-1].out, call.out)


_BREAK = None  # marks a child that ends the current run


class _Search:
    """Bottom-up search of every container of one traced model."""

    def __init__(self, recorded: Trace, parents: Counter[int]) -> None:
        self.trace = recorded
        self.parents = parents  # id(module) -> how many containers hold it
        self.visited: set[int] = set()

    def runs(self, model: nn.Module) -> list[_Run]:
        return sorted(self._search(model, ""), key=lambda run: run.order)

    def _search(self, module: nn.Module, path: str) -> list[_Run]:
        if isinstance(module, GlobalLayer) or id(module) in self.visited:
            return []
        self.visited.add(id(module))
        inner = self._inner_stages(module, path)  # uncalled containers too (an nn.ModuleList)
        children = self._called_children(module, path)
        blocked = {c.name for c in children if not self._can_be_block(c)}
        while True:
            runs = [run for run in _runs(path, children, blocked) if run.is_stage]
            losers = {
                c.name
                for run in runs for unit in run.units for c in unit.children
                if any(s.fills(c.call) and s.m >= run.m for s in inner[c.name])
            }
            if not losers:
                break
            blocked |= losers  # these children are stages themselves: they end the parent's runs
        for run in runs:  # no nesting: stages inside the blocks of a run give way to it
            for unit in run.units:
                for c in unit.children:
                    inner[c.name] = []
        return [s for found in inner.values() for s in found] + runs

    def _inner_stages(self, module: nn.Module, path: str) -> dict[str, list[_Run]]:
        return {name: self._search(child, f"{path}.{name}" if path else name) for name, child in module.named_children()}

    def _called_children(self, module: nn.Module, path: str) -> list[_Child]:
        children = []
        for name, child in module.named_children():
            call = self.trace.of(child)
            if call is not None:
                children.append(_Child(name, f"{path}.{name}" if path else name, child, call))
        return sorted(children, key=lambda c: c.call.order)  # call order, not registration order

    def _can_be_block(self, child: _Child) -> bool:
        return (
            child.call.simple
            and child.call.calls == 1
            and self.parents[id(child.module)] == 1
            and not any(isinstance(m, GlobalLayer) for m in child.module.modules())
        )


def _runs(container: str, children: list[_Child], blocked: set[str]) -> list[_Run]:
    """Group ``children`` (in call order) into units, then the units into runs of equal shape."""
    runs: list[_Run] = []
    run = _Run(container)
    for item in _units(_call_sequence(children), blocked):
        if item is _BREAK:
            runs.append(run)
            run = _Run(container)
            continue
        if run.units and _continues(run, item):
            run.units.append(item)
        else:
            runs.append(run)
            run = _Run(container, [item])
    runs.append(run)
    return [r for r in runs if r.units]


def _call_sequence(children: list[_Child]) -> list[_Child]:
    """The children in call order, a child called k times appearing k times (each call ends a run)."""
    calls = [(order, c) for c in children for order in c.call.orders]
    return [c for _, c in sorted(calls, key=lambda pair: pair[0])]


def _continues(run: _Run, unit: _Unit) -> bool:
    """A unit extends a run when it is fed by the run's last block and keeps the run's shape."""
    shape = run.units[-1].out_shape
    return feeds(run.units[-1].out, unit.inp) and unit.in_shape == shape and unit.out_shape == shape


def _units(children: list[_Child], blocked: set[str]) -> Iterable[_Unit | None]:
    """Units in call order, with ``_BREAK`` where a child ends the current run."""
    unit: _Unit | None = None
    for child in children:
        if unit is not None and child.name not in blocked and _absorbs(unit, child):
            unit.children.append(child)  # BN, activation, dropout after a convolution
            continue
        if unit is not None:
            yield unit
        if child.name not in blocked and _computes(child.module):
            unit = _Unit([child])
        else:  # pooling, flatten, an unconnected or a blocked module
            unit = None
            yield _BREAK
    if unit is not None:
        yield unit


def _absorbs(unit: _Unit, child: _Child) -> bool:
    """A child joins the unit before it if it computes nothing, is fed by it and keeps the shape."""
    call = child.call
    return not _computes(child.module) and feeds(unit.out, call.inp) and call.in_shape == call.out_shape


def _computes(module: nn.Module) -> bool:
    """Whether the module holds a convolution, a linear layer, or another weight of rank >= 2."""
    for m in module.modules():
        if isinstance(m, _WEIGHTED):
            return True
        if not isinstance(m, _NORMS) and any(p.dim() >= 2 for p in m.parameters(recurse=False)):
            return True
    return False


def _parent_counts(model: nn.Module) -> Counter[int]:
    counts: Counter[int] = Counter()
    seen: set[int] = set()
    for module in model.modules():
        if id(module) in seen:
            continue
        seen.add(id(module))
        for child in module.children():
            counts[id(child)] += 1
    return counts


# --- naming and measuring ---------------------------------------------------------------------


def _names(runs: list[_Run]) -> list[str]:
    per_container = Counter(run.container for run in runs)
    names = [_name(run, short=per_container[run.container] == 1) for run in runs]
    clashes = {n for n, count in Counter(names).items() if count > 1}
    return [_name(run, short=False) if n in clashes else n for run, n in zip(runs, names)]


def _name(run: _Run, *, short: bool) -> str:
    if short:
        return run.container or "model"
    span = f"{run.units[0].children[0].name}-{run.units[-1].children[-1].name}"
    return f"{run.container}.{span}" if run.container else span


def _to_stage(run: _Run, name: str, model: nn.Module, macs_of: dict[str, int]) -> Stage:
    assert run.shape is not None  # only 4-D runs are stages
    _, channels, height, width = run.shape  # (B, C, H, W) of every block after the first
    block = run.units[1]  # the first shape-preserving block
    return Stage(
        name=name,
        container=run.container,
        block_paths=tuple(tuple(c.path for c in unit.children) for unit in run.units),
        channels=int(channels),
        height=int(height),
        width=int(width),
        m=run.m,
        block_macs=sum(macs_of.get(c.path, 0) for c in block.children),
        block_params=sum(count_params(c.module) for c in block.children),
    )


def _no_stages_message(model: nn.Module) -> str:
    already = any(isinstance(m, GlobalLayer) for m in model.modules())
    hint = " (it already has Global layers in place of its repeated blocks)" if already else ""
    return f"no stages found in {type(model).__name__}{hint}: {STAGE_DEFINITION}; there is nothing to compress"
