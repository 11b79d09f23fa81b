"""init="identity": the gated Global layer y = f + a * G(f) with a = 0 (issue 13, item 1), layer by layer."""

import json

import pytest
import torch

from pdenas.nn import (
    GatedGlobalLayer,
    GlobalLayer,
    GlobalLayerConfig,
    GlobalLayerConfigError,
    create_global_layer,
    list_global_layers,
)


@pytest.mark.parametrize("variant", list_global_layers())
def test_identity_layer_starts_as_the_identity_and_its_gate_learns(variant):
    torch.manual_seed(0)
    layer = create_global_layer(variant, 6, config=GlobalLayerConfig(iterations=2, init="identity"))
    assert isinstance(layer, GatedGlobalLayer) and float(layer.gate.detach()) == 0.0
    f = torch.randn(3, 6, 8, 8, requires_grad=True)
    y = layer(f)
    assert torch.equal(y, f)  # exactly the input (0 * G(f) = 0), in train mode
    target = torch.randn_like(f)
    (y - target).square().mean().backward()
    with torch.no_grad():
        g = layer.layer(f)  # G(f)
        expected = ((2 * (f - target) / f.numel()) * g).sum()  # dL/da = <dL/dy, G(f)>
    assert float(layer.gate.grad) != 0.0
    torch.testing.assert_close(layer.gate.grad, expected, rtol=1e-4, atol=1e-7)
    assert all(p.grad is None or not p.grad.any() for p in layer.layer.parameters())  # a * ... = 0 at the start
    layer.eval()
    assert torch.equal(layer(f.detach()), f.detach())


def test_identity_and_random_draw_the_same_weights():
    torch.manual_seed(3)
    plain = create_global_layer("advection-diffusion", 8, config=GlobalLayerConfig(iterations=3))
    torch.manual_seed(3)
    gated = create_global_layer("advection-diffusion", 8, config=GlobalLayerConfig(iterations=3, init="identity"))
    assert type(plain) is GlobalLayer  # the paper's layer, unwrapped
    assert list(gated.state_dict()) == ["gate"] + [f"layer.{k}" for k in plain.state_dict()]
    for key, value in plain.state_dict().items():
        assert torch.equal(gated.state_dict()[f"layer.{key}"], value), key
    f = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        gated.gate.fill_(0.5)
        plain.eval(), gated.eval()
        torch.testing.assert_close(gated(f), f + 0.5 * plain(f))


def test_random_init_is_the_default_and_unchanged():
    assert GlobalLayerConfig().init == "random"
    old = {k: v for k, v in GlobalLayerConfig(iterations=2).to_dict().items() if k != "init"}  # a plan written before
    assert GlobalLayerConfig.from_dict(old) == GlobalLayerConfig(iterations=2, init="random")
    torch.manual_seed(1)
    a = GlobalLayer(4, GlobalLayerConfig(iterations=2))
    torch.manual_seed(1)
    b = create_global_layer("advection-diffusion", 4, config=GlobalLayerConfig.from_dict(old))
    assert type(b) is GlobalLayer and list(a.state_dict()) == list(b.state_dict())
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
    x = torch.randn(2, 4, 5, 5)
    assert torch.equal(a(x), b(x))


def test_config_round_trips_and_rejects_bad_init():
    cfg = GlobalLayerConfig(iterations=2, dt=0.15, init="identity")
    assert GlobalLayerConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(GlobalLayerConfigError, match="init must be 'random' or 'identity', got 'zero'"):
        GlobalLayerConfig(init="zero")
    with pytest.raises(GlobalLayerConfigError, match="set residual to false"):
        GlobalLayerConfig(init="identity", residual=True)
    with pytest.raises(ValueError, match="residual=False"):
        GatedGlobalLayer(GlobalLayer(4, GlobalLayerConfig(residual=True)))
