"""assemble (issue 13, items 3 and 4): a candidate whose changed stages hold the distilled weights, for
Global layers and block dropping, the rest the original's."""

from __future__ import annotations

import pytest
import torch

from pdenas.distill import DistillError, StageModule, VariantStore, assemble, make_variant, stage_loss
from pdenas.nn import GatedGlobalLayer, GlobalLayerConfig
from pdenas.surgery import CompressionPlan, StagePlan, compress

from .conftest import RECIPE


def test_assembled_candidate_holds_the_distilled_stages(original, features, tmp_path):
    store = VariantStore(tmp_path)
    plan = CompressionPlan({
        "layer1": StagePlan(5),  # untouched
        "layer2": StagePlan(1, GlobalLayerConfig(iterations=1, init="identity")),
        "layer3": StagePlan(2),  # block dropping gets the same step
    })
    model, stages = assemble(original, plan, features=features, store=store, recipe=RECIPE, device="cpu")
    assert list(stages) == ["layer2", "layer3"] and not any(r.reused for r in stages.values())
    assert isinstance(model.layer2[1], GatedGlobalLayer)
    state, base = model.state_dict(), original.state_dict()
    for name, result in stages.items():
        stored = store.get(result.variant)
        assert stored is not None and set(stored.state_dict) == set(result.state_dict)
        for key, value in stored.state_dict.items():
            assert torch.equal(state[key], value), key
        mse = stage_loss(StageModule(model, features.stage(name)), features, name)
        assert mse == pytest.approx(result.mse, rel=1e-5)  # the candidate's stage is the distilled one
        assert result.loss < result.initial_loss
    for key, value in base.items():  # the stem, layer1, layer4 and the head are the original's
        if not key.startswith(("layer2.", "layer3.")):
            assert torch.equal(state[key], value), key
    plain = compress(original, plan, torch.zeros(1, *features.input_size))
    assert not torch.equal(plain.state_dict()["layer3.1.conv1.weight"], state["layer3.1.conv1.weight"])
    with torch.no_grad():
        assert torch.isfinite(model.eval()(torch.randn(2, *features.input_size))).all()

    again, reused = assemble(original, plan, features=features, store=store, recipe=RECIPE, device="cpu")
    assert all(r.reused for r in reused.values())
    assert all(torch.equal(again.state_dict()[k], v) for k, v in state.items())


def test_a_failed_variant_stops_assembly_with_one_line(original, features, tmp_path):
    unstable = GlobalLayerConfig(iterations=30, dt=40.0, coef_norm_eps=1e-5)
    plan = CompressionPlan({"layer3": StagePlan(1, unstable)})
    store = VariantStore(tmp_path)
    with pytest.raises(DistillError, match=r"stage-wise step of layer3: keep 1 \+ Global K=30 .* failed: .*diverged"):
        assemble(original, plan, features=features, store=store, recipe=RECIPE, device="cpu")
    failed = store.get(make_variant("layer3", 1, unstable, features=features, recipe=RECIPE))
    assert failed is not None and failed.failed  # recorded: nobody trains it again to fail again
