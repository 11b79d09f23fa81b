"""Where a Global layer pays, stage by stage (issue 13, item 3): the data of the report's per-stage view.

Every trial assembled with the stage-wise step records, per changed stage, the stage variant it used,
its stage loss (normalised MSE against the original stage on held-out features: 0 is the original
stage, 1.0 as good as each channel's mean) and the stage's MACs (:class:`pdenas.search.StageRecord`).
From those records alone (so it works for a study on a shared storage, from any machine) this module
compares, per stage and number of kept blocks k:

* **blocks only**, keep k;
* **the best Global layer** after k blocks (the lowest stage loss of those trained);
* **one more kept block**, keep k + 1 blocks only (for k + 1 = m, the original stage itself: loss 0,
  the original's stage MACs);

and says in words which of the two additions lowers the stage loss more per extra million MACs.
Beside each variant: the trials that contained it and their accuracy after fine-tuning. The stage
loss and the accuracy need not agree (a Global-layer form with a higher stage loss can fine-tune to a
better candidate), so both are shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .. import _format as fmt
from ..search import OriginalModel, StageRecord, TrialRecord

__all__ = ["StageChoice", "StageVariantSummary", "StageView", "stage_view"]

MEGA = 1e6


@dataclass(frozen=True)
class StageVariantSummary:
    """One stage variant as the study's trials used it."""

    stage: str
    key: str  # the variant store's key ("" for the original stage)
    keep: int
    text: str  # "keep 1 + Global K=1 dt=0.2"
    has_global: bool
    loss: float
    initial_loss: float | None  # before the stage-wise step (None for the original stage)
    macs: int | None  # honest MACs per image of the stage
    trials: tuple[int, ...]  # completed trials that trained a candidate containing it
    best_accuracy: float | None  # the best of their accuracies after fine-tuning
    mean_initial_accuracy: float | None  # the mean of their accuracies before fine-tuning

    @property
    def original(self) -> bool:
        return self.key == ""

    def figures(self) -> list[str]:
        """Its figures in words, a line each (stage loss, loss before the step, MACs, the trials' accuracy)."""
        lines = [f"stage loss {self.loss:.3f}"]
        if self.initial_loss is not None:
            lines.append(f"before the stage-wise step {self.initial_loss:.3f}")
        lines.append(f"MACs {fmt.count(self.macs)}")
        if self.trials:
            lines.append(f"best accuracy {fmt.percent(self.best_accuracy)} of trials {', '.join(map(str, self.trials))}")
        elif self.original:
            lines.append(f"the original model's accuracy {fmt.percent(self.best_accuracy)}")
        return lines


@dataclass(frozen=True)
class StageChoice:
    """Per stage and kept blocks k: what the best Global layer buys against one more kept block."""

    stage: str
    keep: int
    blocks: StageVariantSummary | None  # keep k, blocks only
    best_global: StageVariantSummary | None  # keep k + the Global layer with the lowest stage loss
    globals_tried: int  # Global layers trained after k blocks
    more_blocks: StageVariantSummary | None  # keep k + 1 blocks only (the original stage when k + 1 = m)
    global_gain: float | None  # stage-loss drop per extra MMAC of the best Global layer, over blocks only
    block_gain: float | None  # the same for one more kept block
    verdict: str  # in words

    @property
    def global_added_mmacs(self) -> float | None:
        return _added(self.blocks, self.best_global)

    @property
    def block_added_mmacs(self) -> float | None:
        return _added(self.blocks, self.more_blocks)


@dataclass(frozen=True)
class StageView:
    """The per-stage view: every variant the study's trials used, and the comparisons."""

    variants: tuple[StageVariantSummary, ...]  # by stage (forward order), kept blocks, loss
    choices: tuple[StageChoice, ...]  # by stage (forward order), then k
    reason: str | None = None  # why there is nothing to show


def stage_view(records: Sequence[TrialRecord], original: OriginalModel) -> StageView:
    """The per-stage view of a study's trial records (``original``: its original model's figures)."""
    own = [r for r in records if r.complete and r.stages and r.reused_from is None]
    if not own:
        return StageView((), (), "No trial was assembled from distilled stages (the study ran without the stage-wise "
                                 "step, or no candidate has finished yet).")
    order = _stage_order(records, own)
    blocks_per_stage = _blocks_per_stage(records)
    variants = _variants(own)
    for stage, m in blocks_per_stage.items():
        macs = (original.stage_macs or {}).get(stage)
        if stage in order and macs is not None:
            variants.append(StageVariantSummary(stage, "", m, f"all {m} blocks (the original stage)", False, 0.0, None,
                                                macs, (), original.accuracy, None))
    variants.sort(key=lambda v: (order.get(v.stage, len(order)), v.keep, v.has_global, v.loss, v.key))
    choices = []
    for stage in sorted({v.stage for v in variants if not v.original}, key=lambda s: order.get(s, len(order))):
        mine = [v for v in variants if v.stage == stage]
        for keep in sorted({v.keep for v in mine if not v.original}):
            choices.append(_choice(stage, keep, mine))
    return StageView(tuple(variants), tuple(choices))


def _variants(own: Sequence[TrialRecord]) -> list[StageVariantSummary]:
    by_key: dict[tuple[str, str], list[tuple[TrialRecord, StageRecord]]] = {}
    for record in own:
        for stage, entry in (record.stages or {}).items():
            by_key.setdefault((stage, entry.key), []).append((record, entry))
    variants = []
    for (stage, key), uses in by_key.items():
        entry = uses[0][1]
        accuracies = [r.accuracy for r, _ in uses if r.accuracy is not None]
        initial = [r.initial_accuracy for r, _ in uses if r.initial_accuracy is not None]
        variants.append(StageVariantSummary(
            stage=stage, key=key, keep=entry.keep, text=entry.describe(), has_global=entry.global_layer is not None,
            loss=entry.loss, initial_loss=entry.initial_loss, macs=entry.macs,
            trials=tuple(sorted(r.number for r, _ in uses)), best_accuracy=max(accuracies) if accuracies else None,
            mean_initial_accuracy=sum(initial) / len(initial) if initial else None,
        ))
    return variants


def _choice(stage: str, keep: int, variants: Sequence[StageVariantSummary]) -> StageChoice:
    blocks = next((v for v in variants if v.keep == keep and not v.has_global), None)
    globals_ = sorted((v for v in variants if v.keep == keep and v.has_global), key=lambda v: v.loss)
    best = globals_[0] if globals_ else None
    more = next((v for v in variants if v.keep == keep + 1 and not v.has_global), None)
    global_gain, block_gain = _gain(blocks, best), _gain(blocks, more)
    return StageChoice(stage, keep, blocks, best, len(globals_), more, global_gain, block_gain,
                       _verdict(keep, blocks, best, more, global_gain, block_gain))


def _verdict(keep: int, blocks: StageVariantSummary | None, best: StageVariantSummary | None,
             more: StageVariantSummary | None, global_gain: float | None, block_gain: float | None) -> str:
    kept = f"{keep} kept block{'s' if keep != 1 else ''}"
    one_more = "the original stage" if more is not None and more.original else "one more kept block"
    if blocks is None:
        return f"Blocks only with {kept} was not tried, so there is nothing to weigh the Global layer against."
    if best is None:
        if block_gain is None:
            return f"Neither a Global layer after {kept} nor one more kept block was tried."
        return (f"No Global layer after {kept} was tried; {one_more} lowers the stage loss by "
                f"{block_gain:.3g} per extra MMAC.")
    if global_gain is None or global_gain <= 0:
        tail = f"; {one_more} lowers it to {more.loss:.3f}" if more is not None else ""
        return (f"A kept block pays more here: the best Global layer after {kept} does not lower the stage loss "
                f"({best.loss:.3f} against {blocks.loss:.3f} for blocks only){tail}.")
    if block_gain is None:
        return (f"The Global layer lowers the stage loss by {global_gain:.3g} per extra MMAC; one more kept block "
                "was not tried, so the two cannot be weighed yet.")
    if block_gain >= global_gain:
        return (f"A kept block pays more here: {one_more} lowers the stage loss by {block_gain:.3g} per extra MMAC, "
                f"the best Global layer by {global_gain:.3g}.")
    return (f"The Global layer pays more here: it lowers the stage loss by {global_gain:.3g} per extra MMAC, "
            f"{one_more} by {block_gain:.3g}.")


def _gain(base: StageVariantSummary | None, other: StageVariantSummary | None) -> float | None:
    """Stage-loss drop per extra million MACs of ``other`` over ``base`` (None when either is unknown)."""
    added = _added(base, other)
    if base is None or other is None or added is None or added <= 0:
        return None
    return (base.loss - other.loss) / added


def _added(base: StageVariantSummary | None, other: StageVariantSummary | None) -> float | None:
    if base is None or other is None or base.macs is None or other.macs is None:
        return None
    return (other.macs - base.macs) / MEGA


def _stage_order(records: Sequence[TrialRecord], own: Sequence[TrialRecord]) -> dict[str, int]:
    """Stages in forward order: as the plans list them (every plan names the searched stages in that order)."""
    names: list[str] = []
    for record in [*records, *own]:
        for name in ((record.plan or {}).get("stages") or {}):
            if name not in names:
                names.append(name)
        for name in record.stages or {}:
            if name not in names:
                names.append(name)
    return {name: i for i, name in enumerate(names)}


def _blocks_per_stage(records: Sequence[TrialRecord]) -> dict[str, int]:
    """m of each stage, from the original's trial (its plan keeps every block)."""
    reference = next((r for r in records if r.reference and r.plan), None)
    stages = (reference.plan or {}).get("stages") or {} if reference is not None else {}
    return {name: int(plan["keep"]) for name, plan in stages.items() if isinstance(plan, dict) and isinstance(plan.get("keep"), int)}
