import pytest
import torch

from pdenas.cost import count_params, profile
from pdenas.nn import GlobalLayer
from pdenas.zoo import UnknownModelError, create_model, list_models

# The paper's figures (Kag & Saligrama, CVPR 2022, Table 1), 10 classes, 3x32x32 input.
PARAMS = {
    "resnet20": 272_474,
    "resnet32": 466_906,
    "resnet56": 855_770,
    "resnet32_global": 161_402,
    "resnet56_global": 332_602,
    "resnet_tiny": 21_464,
    "resnet_tiny_global": 13_882,
}
CONV_MACS = {"resnet32": 69.76e6, "resnet32_global": 15.25e6}
APPROX_PARAMS = {"wrn40_4": 8.9e6, "wrn40_4_global": 2.8e6}


def test_registry_lists_every_paper_model():
    assert set(PARAMS) | set(APPROX_PARAMS) <= set(list_models())


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_parameter_count_is_exact(name):
    assert count_params(create_model(name)) == PARAMS[name]


@pytest.mark.parametrize("name", sorted(APPROX_PARAMS))
def test_wrn_parameter_count(name):
    assert count_params(create_model(name)) == pytest.approx(APPROX_PARAMS[name], rel=0.02)


@pytest.mark.parametrize("name", sorted(CONV_MACS))
def test_conv_macs_within_one_percent(name):
    assert profile(create_model(name)).conv_macs == pytest.approx(CONV_MACS[name], rel=0.01)


@pytest.mark.parametrize("name", list_models())
def test_every_model_runs_forward_and_backward(name):
    model = create_model(name, num_classes=7)
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 7)
    out.sum().backward()
    model.eval()
    assert model(x).shape == (2, 7)


@pytest.mark.parametrize("name", [n for n in list_models() if n.endswith("_global")])
def test_global_models_take_iterations_and_dt(name):
    model = create_model(name, iterations=3, dt=0.1)
    layers = [m for m in model.modules() if isinstance(m, GlobalLayer)]
    assert layers and all(m.config.iterations == 3 and m.config.dt == 0.1 for m in layers)


def test_paper_global_layout():
    model = create_model("resnet32_global")
    stages = [getattr(model, f"layer{i}") for i in range(1, 5)]
    has_global = [isinstance(stage[-1], GlobalLayer) for stage in stages]
    assert has_global == [True, True, True, False]
    assert [m.channels for m in model.modules() if isinstance(m, GlobalLayer)] == [16, 32, 64]
    tiny = [m.config.iterations for m in create_model("resnet_tiny_global").modules() if isinstance(m, GlobalLayer)]
    assert tiny == [5, 5, 5]


def test_one_channel_and_non_square_inputs():
    model = create_model("resnet20", in_channels=1)
    assert model(torch.randn(2, 1, 28, 36)).shape == (2, 10)


def test_unknown_model_suggests_the_closest_name():
    with pytest.raises(UnknownModelError, match="did you mean 'resnet32'"):
        create_model("resnet23")
    with pytest.raises(ValueError, match="does not accept"):
        create_model("resnet20", iterations=3)
