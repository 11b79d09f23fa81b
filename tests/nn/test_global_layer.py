import json

import pytest
import torch
from torch import nn

from pdenas.nn import (
    GlobalLayer,
    GlobalLayerConfig,
    GlobalLayerConfigError,
    GlobalLayerUnstableError,
    create_global_layer,
    list_global_layers,
)
from pdenas.nn.functional import global_pde_reference


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_default_layer_has_four_coefficient_branches_and_output_bn():
    layer = GlobalLayer(16)
    convs = [m for m in layer.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in layer.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(convs) == 4 and all(c.groups == 16 and c.bias is None and c.kernel_size == (3, 3) for c in convs)
    assert len(bns) == 5
    # 4 depthwise 3x3 convs (9C each), 4 coefficient BNs and the output BN (2C each)
    assert _params(layer) == 4 * 9 * 16 + 5 * 2 * 16


def test_coefficient_bn_eps_defaults_to_channels_and_can_be_overridden():
    layer = GlobalLayer(24)
    eps = sorted({m.eps for m in layer.modules() if isinstance(m, nn.BatchNorm2d)})
    assert eps == [1e-5, 24.0]  # output BN keeps the default, coefficient BNs use eps = C
    layer = GlobalLayer(24, GlobalLayerConfig(coef_norm_eps=1e-3))
    assert sorted({m.eps for m in layer.modules() if isinstance(m, nn.BatchNorm2d)}) == [1e-5, 1e-3]


def test_forward_is_the_solver_on_the_coefficient_fields():
    torch.manual_seed(0)
    cfg = GlobalLayerConfig(iterations=3, dt=0.15)
    layer = GlobalLayer(4, cfg).eval()
    f = torch.randn(2, 4, 8, 8)
    coef = lambda branch: torch.relu(branch[1](branch[0](f)))  # noqa: E731
    H = global_pde_reference(
        f, f, coef(layer.u), coef(layer.v), coef(layer.diff_x), coef(layer.diff_y), iterations=3, dt=0.15
    )
    expected = torch.relu(layer.bn_out(H))
    torch.testing.assert_close(layer(f), expected, rtol=1e-5, atol=1e-6)


def test_switches_change_the_structure():
    c = GlobalLayer(8, GlobalLayerConfig(diffusion="constant", advection=False))
    assert c.u is None and c.v is None and c.diff_x is None and c.diff_y is None
    assert _params(c) == 2 * 8  # only the output BN
    x = torch.randn(2, 8, 6, 6)
    out_plain = GlobalLayer(8, GlobalLayerConfig(residual=False)).eval()
    out_res = GlobalLayer(8, GlobalLayerConfig(residual=True)).eval()
    out_res.load_state_dict(out_plain.state_dict())
    torch.testing.assert_close(out_res(x) - out_plain(x), x)
    no_f = GlobalLayer(8, GlobalLayerConfig(forcing=False)).eval()
    no_f.load_state_dict(out_plain.state_dict())
    assert not torch.allclose(no_f(x), out_plain(x))


def test_init_block_is_applied_first():
    block = nn.Conv2d(4, 4, 3, padding=1)
    layer = GlobalLayer(4, init_block=block)
    assert _params(layer) == _params(GlobalLayer(4)) + _params(block)
    out = layer(torch.randn(2, 4, 5, 7))
    assert out.shape == (2, 4, 5, 7)


def test_trains_and_gradients_reach_every_parameter():
    layer = GlobalLayer(6, GlobalLayerConfig(iterations=4))
    x = torch.randn(4, 6, 8, 8)
    layer(x).square().mean().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_unstable_setting_raises_a_clear_error_in_training():
    cfg = GlobalLayerConfig(iterations=40, dt=50.0, coef_norm_eps=1e-5)
    layer = GlobalLayer(4, cfg, name="layer2")
    x = torch.randn(2, 4, 8, 8) * 100
    with pytest.raises(GlobalLayerUnstableError, match=r"layer2.*iterations=40.*dt=50.0"):
        for _ in range(3):
            layer(x)


@pytest.mark.parametrize(
    "field,value",
    [("iterations", 0), ("dt", -0.1), ("dt", float("nan")), ("dx", 0), ("diffusion", "weird"), ("coef_norm_eps", -1.0)],
)
def test_config_rejects_bad_values(field, value):
    with pytest.raises(GlobalLayerConfigError, match=field):
        GlobalLayerConfig(**{field: value})


def test_config_json_round_trip():
    cfg = GlobalLayerConfig(iterations=4, dt=0.31, diffusion="constant", cdx=0.5, residual=True, coef_norm_eps=0.1)
    again = GlobalLayerConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    with pytest.raises(GlobalLayerConfigError, match="unknown"):
        GlobalLayerConfig.from_dict({"iterationz": 2})


@pytest.mark.parametrize("variant", list_global_layers())
def test_every_variant_builds_runs_and_backpropagates(variant):
    layer = create_global_layer(variant, 8, config=GlobalLayerConfig(iterations=2))
    x = torch.randn(2, 8, 6, 10, requires_grad=True)
    out = layer(x)
    assert out.shape == x.shape
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    layer.eval()
    assert torch.isfinite(layer(x)).all()


def test_unknown_variant_message():
    with pytest.raises(ValueError, match="unknown Global layer variant 'nope'"):
        create_global_layer("nope", 4)
