"""The per-stage view (where a Global layer pays): its data, computed from trial records as the search
writes them, and the words it chooses."""

from __future__ import annotations

import pytest
from optuna.trial import TrialState

from pdenas.report import stage_view
from pdenas.search import OriginalModel, StageRecord, TrialRecord

M = 3  # blocks of each stage in these records
GLOBAL = {"iterations": 1, "dt": 0.2}
GLOBAL_K3 = {"iterations": 3, "dt": 0.2}


def stage(key: str, keep: int, loss: float, macs: int, glob: dict | None = None, reused: bool = False) -> StageRecord:
    return StageRecord(key=key, keep=keep, global_layer=glob, loss=loss, mse=loss / 2, initial_loss=loss + 0.4,
                       reused=reused, train_time=1.5, macs=macs)


def plan(stages: dict[str, StageRecord]) -> dict:
    return {"format_version": 1, "stages": {name: {"keep": s.keep, "global_layer": s.global_layer} for name, s in stages.items()}}


def trial(number: int, accuracy: float, stages: dict[str, StageRecord], *, initial: float = 0.5,
          reused_from: int | None = None, state: TrialState = TrialState.COMPLETE) -> TrialRecord:
    return TrialRecord(number=number, state=state, plan=plan(stages), accuracy=accuracy, initial_accuracy=initial,
                       stages=stages, reused_from=reused_from)


REFERENCE = TrialRecord(number=0, state=TrialState.COMPLETE, reference=True, accuracy=0.95,
                        plan={"format_version": 1, "stages": {"layer1": {"keep": M, "global_layer": None},
                                                              "layer2": {"keep": M, "global_layer": None}}})
ORIGINAL = OriginalModel(trial_number=0, accuracy=0.95, stage_macs={"layer1": 3_000_000, "layer2": 3_000_000})

# layer2: blocks only at k = 1 (loss 0.6, 1.0M), two Global layers after 1 block (0.5 at 1.2M, 0.55 at 1.1M),
# blocks only at k = 2 (0.3 at 2.0M); the original stage (k = 3) at 3.0M.
# layer1: a Global layer that does not help (0.7 against blocks only 0.6).
B1 = stage("l2-keep1-blocks", 1, 0.6, 1_000_000)
G1 = stage("l2-keep1-global-a", 1, 0.5, 1_200_000, GLOBAL)
G1_WORSE = stage("l2-keep1-global-b", 1, 0.55, 1_100_000, GLOBAL_K3)
B2 = stage("l2-keep2-blocks", 2, 0.3, 2_000_000)
L1_BLOCKS = stage("l1-keep1-blocks", 1, 0.6, 1_000_000)
L1_GLOBAL = stage("l1-keep1-global", 1, 0.7, 1_300_000, GLOBAL)
RECORDS = [
    REFERENCE,
    trial(1, 0.80, {"layer1": L1_BLOCKS, "layer2": B1}, initial=0.40),
    trial(2, 0.85, {"layer1": L1_GLOBAL, "layer2": G1}, initial=0.60),
    trial(3, 0.83, {"layer1": L1_BLOCKS, "layer2": G1_WORSE}),
    trial(4, 0.90, {"layer1": L1_BLOCKS, "layer2": B2}),
    trial(5, 0.99, {"layer1": L1_BLOCKS, "layer2": B1}, reused_from=1),  # copied a result: not a trial of its own
    trial(6, 0.99, {"layer1": L1_GLOBAL, "layer2": B2}, state=TrialState.FAIL),  # failed: no accuracy to speak of
]


def choice(view, name: str, keep: int):
    return next(c for c in view.choices if (c.stage, c.keep) == (name, keep))


def test_variants_gather_the_trials_that_contained_them():
    view = stage_view(RECORDS, ORIGINAL)
    by_key = {v.key: v for v in view.variants}
    assert set(by_key) == {s.key for s in (B1, G1, G1_WORSE, B2, L1_BLOCKS, L1_GLOBAL)} | {""}
    assert by_key[B1.key].trials == (1,) and by_key[B1.key].best_accuracy == 0.80  # not the copy in trial 5
    assert by_key[L1_BLOCKS.key].trials == (1, 3, 4) and by_key[L1_BLOCKS.key].best_accuracy == 0.90
    assert by_key[L1_BLOCKS.key].mean_initial_accuracy == pytest.approx((0.40 + 0.5 + 0.5) / 3)
    assert by_key[L1_GLOBAL.key].trials == (2,)  # trial 6 failed
    assert by_key[G1.key].text == "keep 1 + Global K=1 dt=0.2" and by_key[G1.key].has_global
    assert by_key[G1.key].initial_loss == pytest.approx(0.9)
    original_stages = [v for v in view.variants if v.original]
    assert [(v.stage, v.keep, v.loss, v.macs, v.best_accuracy) for v in original_stages] == [
        ("layer1", M, 0.0, 3_000_000, 0.95), ("layer2", M, 0.0, 3_000_000, 0.95)]
    # forward order (as the plans list the stages), then kept blocks
    assert [v.stage for v in view.variants] == sorted((v.stage for v in view.variants), key=["layer1", "layer2"].index)


def test_a_global_layer_that_lowers_the_loss_more_per_mac_pays_more():
    view = stage_view(RECORDS, ORIGINAL)
    c = choice(view, "layer2", 1)
    assert (c.blocks.key, c.best_global.key, c.more_blocks.key, c.globals_tried) == (B1.key, G1.key, B2.key, 2)
    assert c.global_added_mmacs == pytest.approx(0.2) and c.block_added_mmacs == pytest.approx(1.0)
    assert c.global_gain == pytest.approx((0.6 - 0.5) / 0.2)  # 0.5 per MMAC
    assert c.block_gain == pytest.approx((0.6 - 0.3) / 1.0)  # 0.3 per MMAC
    assert c.verdict.startswith("The Global layer pays more here: it lowers the stage loss by 0.5 per extra MMAC, "
                                "one more kept block by 0.3")


def test_a_global_layer_that_does_not_lower_the_loss_says_a_kept_block_pays_more():
    c = choice(stage_view(RECORDS, ORIGINAL), "layer1", 1)
    assert c.best_global.key == L1_GLOBAL.key and c.global_gain == pytest.approx((0.6 - 0.7) / 0.3)
    assert c.more_blocks is None and c.block_gain is None
    assert c.verdict == ("A kept block pays more here: the best Global layer after 1 kept block does not lower the stage "
                         "loss (0.700 against 0.600 for blocks only).")


def test_one_more_block_at_m_minus_1_is_the_original_stage():
    c = choice(stage_view(RECORDS, ORIGINAL), "layer2", 2)
    assert c.best_global is None and c.more_blocks.original and c.more_blocks.loss == 0.0
    assert c.block_gain == pytest.approx(0.3 / 1.0)
    assert c.verdict == "No Global layer after 2 kept blocks was tried; the original stage lowers the stage loss by 0.3 per extra MMAC."


def test_a_kept_block_that_removes_more_loss_per_mac_pays_more():
    cheap_block = stage("l2-keep2-blocks-cheap", 2, 0.2, 1_100_000)
    view = stage_view([REFERENCE, trial(1, 0.8, {"layer2": B1}), trial(2, 0.8, {"layer2": G1}),
                       trial(3, 0.8, {"layer2": cheap_block})], ORIGINAL)
    c = choice(view, "layer2", 1)
    assert c.block_gain == pytest.approx(4.0) and c.global_gain == pytest.approx(0.5)
    assert c.verdict == ("A kept block pays more here: one more kept block lowers the stage loss by 4 per extra MMAC, "
                         "the best Global layer by 0.5.")


def test_without_stagewise_records_the_view_says_why_it_is_empty():
    plain = [REFERENCE, TrialRecord(number=1, state=TrialState.COMPLETE, accuracy=0.8, plan=REFERENCE.plan)]
    view = stage_view(plain, ORIGINAL)
    assert view.choices == () and view.variants == () and "stage-wise step" in view.reason
