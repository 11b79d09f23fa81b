"""Issue 3, "done when": every listed model goes find_stages -> paper plan -> compress -> forward and
backward, with its weights carried over tensor by tensor and the user's model left untouched."""

import pytest
import torch
import torchvision

from pdenas.cost import profile
from pdenas.nn import GlobalLayer, GlobalLayerConfig
from pdenas.surgery import CompressionPlan, StagePlan, compress, find_stages
from pdenas.zoo import create_model, list_models
from .surgery_helpers import (
    EXPECTED_STAGES,
    TORCHVISION_MODELS,
    assert_unchanged,
    assert_weights_inherited,
    dropped_paths,
    plain_cnn,
    snapshot,
    train_steps,
)

# Zoo *_global models with one block per stage have no stage (tested in test_surgery_stages.py).
ZOO_WITH_STAGES = [name for name in list_models() if name in EXPECTED_STAGES]
CASES = [(name, (3, 32, 32)) for name in ZOO_WITH_STAGES] + [(f"tv:{name}", (3, 32, 32)) for name in TORCHVISION_MODELS]


def _build(name: str) -> torch.nn.Module:
    if name.startswith("tv:"):
        return torchvision.models.get_model(name[3:], weights=None, num_classes=10)
    return create_model(name)


def test_every_model_of_the_issue_is_covered():
    assert set(ZOO_WITH_STAGES) == {n for n in list_models() if not n.endswith("_global")} | {"resnet56_global"}
    assert len(CASES) == len(ZOO_WITH_STAGES) + 9


@pytest.mark.parametrize("name,size", CASES, ids=[c[0] for c in CASES])
def test_paper_plan_compresses_forward_and_backward(name, size):
    torch.manual_seed(0)
    model = _build(name)
    x = torch.randn(2, *size)
    before = snapshot(model)

    stages = find_stages(model, x, macs=not name.startswith("tv:"))
    assert [(s.name, s.m) for s in stages] == EXPECTED_STAGES[name]
    plan = CompressionPlan.paper(stages)
    compressed = compress(model, plan, x)

    assert_unchanged(model, before)  # the user's model is never modified
    assert_weights_inherited(before[0], compressed, stages, plan)
    globals_ = {m.name: m for m in compressed.modules() if isinstance(m, GlobalLayer)}
    for stage in stages:  # one Global layer per stage, in the first dropped slot, at the stage's width
        layer = compressed.get_submodule(stage.block_paths[1][0])
        assert isinstance(layer, GlobalLayer) and layer.name == stage.name and layer.channels == stage.channels
        assert globals_[stage.name] is layer

    with torch.no_grad():
        expected_shape = model.eval()(x).shape
    out = compressed.train()(x)  # train mode: batch norms use the batch
    assert out.shape == expected_shape
    out.square().mean().backward()
    grads = [p.grad for p in compressed.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    with torch.no_grad():
        assert torch.isfinite(compressed.eval()(x)).all()


def test_block_macs_and_params_describe_one_shape_preserving_block():
    model = create_model("resnet20")
    stages = find_stages(model, torch.randn(2, 3, 32, 32))
    block = model.layer1[1]
    assert stages[0].block_params == sum(p.numel() for p in block.parameters())
    # two 3x3 convs at 16 channels on 32x32: 2 * 16 * 16 * 9 * 1024 MACs, plus BN, add and ReLU work
    convs = 2 * 16 * 16 * 9 * 32 * 32
    assert convs < stages[0].block_macs < 1.2 * convs
    assert stages[0].block_macs == find_stages(model, torch.randn(1, 3, 32, 32))[0].block_macs  # per sample


@pytest.mark.parametrize("name,size", [("resnet56", (3, 32, 32)), ("tv:resnet50", (3, 64, 64))])
def test_paper_plan_reduces_macs_and_params(name, size):
    model = _build(name)
    x = torch.randn(2, *size)
    compressed = compress(model, CompressionPlan.paper(find_stages(model, x, macs=False)), x)
    original, small = profile(model, size), profile(compressed, size)
    mac_ratio, param_ratio = original.macs / small.macs, original.params / small.params
    print(f"{name} at {size}: MACs {original.macs} -> {small.macs} ({mac_ratio:.2f}x), "
          f"params {original.params} -> {small.params} ({param_ratio:.2f}x)")
    assert small.macs < original.macs and small.params < original.params
    assert small.conv_macs < original.conv_macs
    assert mac_ratio > {"resnet56": 6.0, "tv:resnet50": 2.0}[name]


def test_identity_plan_gives_the_same_outputs():
    torch.manual_seed(0)
    model = plain_cnn().eval()
    x = torch.randn(2, 3, 16, 16)
    stages = find_stages(model, x)
    same = compress(model, CompressionPlan.identity(stages), x).eval()
    assert repr(same) == repr(model)
    torch.testing.assert_close(same(x), model(x), rtol=0, atol=0)


def test_keep_all_blocks_and_a_global_layer_wraps_the_last_child():
    model = create_model("resnet20")
    x = torch.randn(2, 3, 32, 32)
    plan = CompressionPlan({"layer2": StagePlan(keep=3, global_layer=GlobalLayerConfig(iterations=2))})
    compressed = compress(model, plan, x)
    wrapped = compressed.layer2[2]
    assert isinstance(wrapped, torch.nn.Sequential) and isinstance(wrapped[1], GlobalLayer)
    assert wrapped[0].conv1.weight.data_ptr() != model.layer2[2].conv1.weight.data_ptr()  # a copy
    assert torch.equal(wrapped[0].conv1.weight, model.layer2[2].conv1.weight)
    assert compressed(x).shape == (2, 10)


def test_partial_plans_leave_other_stages_alone_and_strict_false_skips_unknown_stages():
    model = create_model("resnet20")
    x = torch.randn(2, 3, 32, 32)
    stages = find_stages(model, x, macs=False)
    plan = CompressionPlan.from_dict({"stages": {"layer3": {"keep": 2, "global_layer": None}, "layer9": {"keep": 1}}})
    compressed = compress(model, plan, x, strict=False)
    assert dropped_paths(stages, plan) == {"layer3.2"}
    assert isinstance(compressed.layer3[2], torch.nn.Identity)
    assert repr(compressed.layer1) == repr(model.layer1) and repr(compressed.layer2) == repr(model.layer2)
    assert not any(isinstance(m, GlobalLayer) for m in compressed.modules())


def test_global_layer_follows_the_model_dtype():
    model = plain_cnn().double()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    compressed = compress(model, CompressionPlan.paper(find_stages(model, x, macs=False)), x)
    layers = [m for m in compressed.modules() if isinstance(m, GlobalLayer)]
    assert len(layers) == 2 and all(p.dtype == torch.float64 for m in layers for p in m.parameters())
    assert compressed(x).dtype == torch.float64


def test_compressed_model_trains_and_evaluates():
    torch.manual_seed(0)
    model = create_model("resnet20")
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    compressed = compress(model, CompressionPlan.paper(find_stages(model, x[:2], macs=False)), x[:2])
    losses = train_steps(compressed, x, y, steps=6)
    assert losses[-1] < losses[0]
    compressed.eval()
    with torch.no_grad():
        first, second = compressed(x), compressed(x)
    assert torch.equal(first, second)  # eval mode is deterministic (running statistics)
    assert torch.isfinite(first).all()
