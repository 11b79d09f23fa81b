"""Function-preserving insertion (issue 13, item 1): with ``init="identity"`` a compressed candidate computes
what the same plan without its Global layers computes, learns from there, and ``init="random"`` is the
paper's layer exactly as before."""

import json

import pytest
import torch

from pdenas.nn import GatedGlobalLayer, GlobalLayer, GlobalLayerConfig, create_global_layer, list_global_layers
from pdenas.surgery import CompressionPlan, StagePlan, compress, find_stages, load_compressed, save_compressed
from pdenas.zoo import create_model, list_models

from .surgery_helpers import EXPECTED_STAGES

ZOO_WITH_STAGES = [name for name in list_models() if name in EXPECTED_STAGES]
CASES = [(model, variant) for model in ZOO_WITH_STAGES for variant in list_global_layers()]


def _variant_config(variant: str, **settings) -> GlobalLayerConfig:
    """The config a registered variant builds its layer with (its own switches applied)."""
    return create_global_layer(variant, 4, config=GlobalLayerConfig(**settings)).config


def _plans(stages, config):
    with_global = CompressionPlan({s.name: StagePlan(keep=min(1 + i % 2, s.m), global_layer=config) for i, s in enumerate(stages)})
    without = CompressionPlan({name: StagePlan(keep=p.keep) for name, p in with_global.stages.items()})
    return with_global, without


def _gates(model):
    return [m.gate for m in model.modules() if isinstance(m, GatedGlobalLayer)]


@pytest.mark.parametrize("name,variant", CASES, ids=[f"{m}-{v}" for m, v in CASES])
def test_identity_insertion_preserves_the_function_and_learns(name, variant):
    torch.manual_seed(0)
    model = create_model(name)
    x = torch.randn(2, 3, 32, 32)
    stages = find_stages(model, x, macs=False)
    config = _variant_config(variant, iterations=2, init="identity")
    gated_plan, blocks_plan = _plans(stages, config)
    candidate = compress(model, gated_plan, x)
    reference = compress(model, blocks_plan, x)
    assert len(_gates(candidate)) == len(stages)
    for stage in stages:  # the gated layer sits in the first dropped slot (keep = m: after the last child)
        keep = gated_plan.stages[stage.name].keep
        slot = stage.block_paths[keep][0] if keep < stage.m else f"{stage.block_paths[-1][-1]}.1"
        assert isinstance(candidate.get_submodule(slot), GatedGlobalLayer)
        assert f"{slot}.gate" in candidate.state_dict() and f"{slot}.layer.bn_out.weight" in candidate.state_dict()

    with torch.no_grad():
        torch.testing.assert_close(candidate.eval()(x), reference.eval()(x), rtol=1e-5, atol=1e-5)
    out = candidate.train()(x)  # train mode: batch statistics, the Global layer's own BNs run too
    torch.testing.assert_close(out, reference.train()(x), rtol=1e-5, atol=1e-5)

    out.square().mean().backward()
    assert all(float(gate.grad.abs()) > 0 for gate in _gates(candidate))  # dL/da = <dL/dy, G(f)> != 0
    torch.optim.SGD(candidate.parameters(), lr=0.1).step()
    assert all(float(gate.detach()) != 0.0 for gate in _gates(candidate))
    with torch.no_grad():  # after the step the Global layers contribute: closing their gates changes the output
        stepped = candidate.eval()(x)
        for gate in _gates(candidate):
            gate.zero_()
        assert not torch.allclose(candidate(x), stepped, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", list_global_layers())
def test_random_init_is_bit_identical_to_the_paper_layer(variant):
    model = create_model("resnet20")
    x = torch.randn(2, 3, 32, 32)
    stages = find_stages(model, x, macs=False)
    legacy = json.loads(CompressionPlan.paper(stages, config=_variant_config(variant, iterations=2)).to_json())
    for stage in legacy["stages"].values():
        del stage["global_layer"]["init"]  # a plan written before the setting existed
    plans = [CompressionPlan.from_dict(legacy), CompressionPlan.paper(stages, config=_variant_config(variant, iterations=2, init="random"))]
    assert plans[0] == plans[1]
    built = []
    for plan in plans:
        torch.manual_seed(7)
        built.append(compress(model, plan, x))
    torch.manual_seed(7)  # the layers the surgery drew before init existed: GlobalLayer(C, config) per stage, in order
    expected = [GlobalLayer(s.channels, plans[0].stages[s.name].global_layer) for s in stages]
    for candidate in built:
        layers = [candidate.get_submodule(s.block_paths[1][0]) for s in stages]
        assert [type(layer) for layer in layers] == [GlobalLayer] * len(stages)
        for layer, want in zip(layers, expected):
            assert list(layer.state_dict()) == list(want.state_dict())
            assert all(torch.equal(layer.state_dict()[k], v) for k, v in want.state_dict().items())
    with torch.no_grad():
        assert torch.equal(built[0].eval()(x), built[1].eval()(x))


def test_identity_plan_round_trips_describes_and_reloads(tmp_path):
    model = create_model("resnet20")
    x = torch.randn(1, 3, 32, 32)
    stages = find_stages(model, x, macs=False)
    plan = CompressionPlan.paper(stages, config=GlobalLayerConfig(iterations=2, init="identity"))
    again = CompressionPlan.from_json(plan.to_json())
    assert again == plan and again.stages["layer1"].global_layer.init == "identity"
    assert plan.describe().startswith("layer1: keep 1 + Global K=2 dt=0.2 (init=identity)")
    assert "init" not in CompressionPlan.paper(stages).describe()  # the default is not spelled out
    candidate = compress(model, plan, x)
    with torch.no_grad():
        for gate in _gates(candidate):
            gate.fill_(0.25)
    save_compressed(tmp_path / "m.pt", candidate, plan=plan, model_spec="resnet20", input_size=(3, 32, 32))
    loaded = load_compressed(tmp_path / "m.pt")
    assert [float(g.detach()) for g in _gates(loaded)] == [0.25] * 3
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), candidate.eval()(x))
