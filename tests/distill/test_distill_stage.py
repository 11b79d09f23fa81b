"""The stage-wise step (issue 13, items 2 and 4): a compressed stage learns the original stage's output,
for Global layers and for block dropping alike; the variant key and its failures."""

from __future__ import annotations

import copy

import pytest
import torch

from pdenas.distill import (
    DistillError,
    FeaturesError,
    StageModule,
    StageRecipe,
    StageVariant,
    distill_stage,
    make_variant,
    model_fingerprint,
    stage_loss,
)
from pdenas.nn import GlobalLayerConfig
from pdenas.surgery import CompressionPlan, compress

from .conftest import RECIPE

VARIANTS = {
    "blocks": None,
    "global": GlobalLayerConfig(iterations=1, dt=0.2),
    "identity": GlobalLayerConfig(iterations=1, dt=0.2, init="identity"),
}


@pytest.fixture(scope="module")
def results(original, features, session_one_thread):
    return {name: distill_stage(original, make_variant("layer2", 1, cfg, features=features, recipe=RECIPE), features, device="cpu")
            for name, cfg in VARIANTS.items()}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_the_step_lowers_the_stage_loss(results, features, name):
    result = results[name]
    assert result.error is None and not result.reused
    assert result.loss < 0.9 * result.initial_loss  # below the undistilled candidate stage, on held-out features
    assert result.mse == pytest.approx(result.loss * features.target_variance("layer2"))
    assert result.images == features.count("train") and result.epochs == RECIPE.epochs and result.train_time > 0


def test_identity_insertion_starts_where_block_dropping_starts(results):
    assert results["identity"].initial_mse == pytest.approx(results["blocks"].initial_mse, rel=1e-6)
    assert results["global"].initial_mse != pytest.approx(results["blocks"].initial_mse, rel=1e-3)


def test_the_result_holds_the_stage_weights_only(results, original, features):
    state = results["identity"].state_dict
    assert "layer2.1.gate" in state and "layer2.1.layer.bn_out.weight" in state and "layer2.0.conv1.weight" in state
    assert all(key.startswith("layer2.") for key in state)
    assert float(state["layer2.1.gate"]) != 0.0  # the Global layer joined in
    assert not torch.equal(state["layer2.0.conv1.weight"], original.state_dict()["layer2.0.conv1.weight"])  # trained
    assert set(results["blocks"].state_dict) == {k for k in original.state_dict() if k.startswith("layer2.0.")}
    # the stored weights reproduce the reported loss
    plan = CompressionPlan({"layer2": results["identity"].variant.stage_plan})
    candidate = compress(original, plan, torch.zeros(1, *features.input_size))
    candidate.load_state_dict(state, strict=False)
    mse = stage_loss(StageModule(candidate, features.stage("layer2")), features, "layer2")
    assert mse == pytest.approx(results["identity"].mse, rel=1e-5)


def test_the_step_is_deterministic_and_leaves_the_original_alone(original, features, results):
    before = model_fingerprint(original)
    again = distill_stage(original, make_variant("layer2", 1, VARIANTS["global"], features=features, recipe=RECIPE), features, device="cpu")
    assert model_fingerprint(original) == before
    assert again.loss == pytest.approx(results["global"].loss, rel=1e-5)  # same init, same batches
    for key, value in results["global"].state_dict.items():
        torch.testing.assert_close(again.state_dict[key], value, rtol=1e-4, atol=1e-5)


def test_variant_key_is_stable_and_sensitive(features):
    variant = make_variant("layer2", 1, VARIANTS["global"], features=features, recipe=RECIPE)
    assert StageVariant.from_dict(variant.to_dict()) == variant
    assert variant.key() == make_variant("layer2", 1, GlobalLayerConfig(iterations=1, dt=0.2), features=features, recipe=RECIPE).key()
    assert variant.key().startswith("layer2-keep1-global-")
    others = [
        make_variant("layer2", 2, VARIANTS["global"], features=features, recipe=RECIPE),
        make_variant("layer2", 1, VARIANTS["identity"], features=features, recipe=RECIPE),
        make_variant("layer2", 1, GlobalLayerConfig(iterations=1, dt=0.25), features=features, recipe=RECIPE),
        make_variant("layer2", 1, VARIANTS["global"], features=features, recipe=StageRecipe(epochs=3)),
        make_variant("layer3", 1, VARIANTS["global"], features=features, recipe=RECIPE),
    ]
    assert len({variant.key()} | {o.key() for o in others}) == 6


def test_a_diverging_variant_is_a_failed_result_not_a_crash(original, features):
    unstable = GlobalLayerConfig(iterations=30, dt=40.0, coef_norm_eps=1e-5)
    result = distill_stage(original, make_variant("layer3", 1, unstable, features=features, recipe=RECIPE), features, device="cpu")
    assert result.failed and "diverged" in result.error and result.state_dict == {}


def test_wrong_original_and_bad_recipe_are_one_line_errors(original, features):
    other = copy.deepcopy(original)
    with torch.no_grad():
        other.fc.bias.add_(1.0)
    variant = make_variant("layer2", 1, None, features=features, recipe=RECIPE)
    with pytest.raises(FeaturesError, match="computed from other weights"):
        distill_stage(other, variant, features, device="cpu")
    with pytest.raises(DistillError, match="StageRecipe: lr must be a number > 0, got 0"):
        StageRecipe(lr=0)
    with pytest.raises(DistillError, match="StageRecipe: unknown setting"):
        StageRecipe.from_dict({"epoch": 2})
