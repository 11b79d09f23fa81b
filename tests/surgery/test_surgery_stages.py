"""find_stages: stages read from the model's behaviour (issue 3, section 1)."""

import json

import pytest
import torch
import torchvision
from torch import nn

from pdenas.cost import macs_by_module
from pdenas.surgery import ExampleInputError, NoStagesError, Stage, find_stages
from pdenas.zoo import create_model
from .surgery_helpers import ListNet, assert_unchanged, plain_cnn, snapshot, two_layer_cnn


def test_resnet_stages_record_paths_shapes_and_the_transition_block():
    stages = find_stages(create_model("resnet20"), torch.randn(2, 3, 32, 32))
    assert [s.name for s in stages] == ["layer1", "layer2", "layer3"]
    layer2 = stages[1]
    assert layer2.container == "layer2"
    assert layer2.block_paths == (("layer2.0",), ("layer2.1",), ("layer2.2",))  # layer2.0 is the transition
    assert (layer2.channels, layer2.height, layer2.width, layer2.m) == (32, 16, 16, 3)
    assert layer2.block_macs > 0 and layer2.block_params == 2 * (32 * 32 * 9 + 2 * 32)


def test_block_macs_are_pdenas_cost_figures_for_the_second_block():
    model, x = create_model("resnet20"), torch.randn(2, 3, 32, 32)
    by_module = macs_by_module(model, x)
    for stage in find_stages(model, x):
        assert stage.block_macs == sum(by_module[path] for path in stage.block_paths[1])
    vgg = torchvision.models.vgg11_bn(num_classes=10)  # a block of three children: conv, BN, ReLU
    stage = find_stages(vgg, x)[0]
    assert len(stage.block_paths[1]) == 3
    assert stage.block_macs == sum(macs_by_module(vgg, x)[path] for path in stage.block_paths[1])
    assert all(s.block_macs == 0 for s in find_stages(model, x, macs=False))


def test_the_top_level_of_a_resnet_is_not_a_stage():
    # stem + layer1 keep the shape at 16x32x32, but layer1 is itself a stage (no nesting)
    names = [s.name for s in find_stages(create_model("resnet_tiny"), torch.randn(1, 3, 32, 32), macs=False)]
    assert names == ["layer1", "layer2", "layer3", "layer4"]


def test_plain_sequential_cnn_has_two_stages_of_conv_units():
    stages = find_stages(plain_cnn(), torch.randn(2, 3, 16, 16))
    assert [(s.name, s.container, s.m, s.channels, s.height) for s in stages] == [
        ("0-8", "", 3, 16, 16), ("10-13", "", 2, 32, 8),
    ]
    assert stages[0].block_paths == (("0", "1", "2"), ("3", "4", "5"), ("6", "7", "8"))  # conv-BN-ReLU units
    assert stages[1].block_paths == (("10", "11"), ("12", "13"))


def test_a_single_run_at_the_top_level_is_named_model():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
    assert [s.name for s in find_stages(model, torch.randn(1, 3, 8, 8), macs=False)] == ["model"]


def test_vgg_features_split_into_conv_bn_relu_stages_at_the_max_pools():
    stages = find_stages(torchvision.models.vgg11_bn(weights=None, num_classes=10), torch.randn(1, 3, 32, 32), macs=False)
    assert [(s.name, s.m, s.channels, s.height) for s in stages] == [
        ("features.8-13", 2, 256, 8), ("features.15-20", 2, 512, 4), ("features.22-27", 2, 512, 2),
    ]
    assert stages[0].block_paths == (("features.8", "features.9", "features.10"), ("features.11", "features.12", "features.13"))


def test_module_list_blocks_glued_by_functional_relus():
    model = ListNet(blocks=4)
    (stage,) = find_stages(model, torch.randn(2, 3, 8, 8))
    assert (stage.name, stage.m, stage.channels) == ("blocks", 4, 8)
    assert stage.block_paths == tuple((f"blocks.{i}",) for i in range(4))


def test_functional_glue_is_followed_even_when_the_weights_are_frozen():
    model = ListNet(blocks=3).requires_grad_(False)
    (stage,) = find_stages(model, torch.randn(2, 3, 8, 8), macs=False)
    assert (stage.name, stage.m) == ("blocks", 3)
    inplace_first = nn.Sequential(nn.ReLU(inplace=True), plain_cnn())  # an in-place op on the input itself
    assert len(find_stages(inplace_first, torch.randn(2, 3, 16, 16), macs=False)) == 2


def test_a_residual_add_between_blocks_ends_the_run():
    class Skip(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.c = (nn.Conv2d(4, 4, 3, padding=1) for _ in range(3))

        def forward(self, x):
            y = self.b(self.a(x))
            return self.c(y + x)  # c is fed by b and x together, not by b alone

    (stage,) = find_stages(Skip(), torch.randn(1, 4, 8, 8))
    assert (stage.name, stage.block_paths) == ("model", (("a",), ("b",)))


def test_a_module_called_twice_is_not_a_block():
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x):
            return self.conv2(self.conv2(self.conv1(x)))

    with pytest.raises(NoStagesError):
        find_stages(Twice(), torch.randn(1, 3, 8, 8))


@pytest.mark.parametrize("size", [(1, 32, 48), (3, 32, 48)], ids=["1-channel", "non-square"])
def test_non_square_and_one_channel_inputs(size):
    model = create_model("resnet20", in_channels=size[0])
    stages = find_stages(model, torch.randn(2, *size))
    assert [(s.channels, s.height, s.width) for s in stages] == [(16, 32, 48), (32, 16, 24), (64, 8, 12)]
    plain = find_stages(plain_cnn(in_channels=size[0]), torch.randn(2, *size))
    assert [(s.height, s.width) for s in plain] == [(32, 48), (16, 24)]


def test_torchvision_model_on_a_non_square_input():
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    stages = find_stages(model, torch.randn(1, 3, 32, 64), macs=False)
    assert [(s.name, s.height, s.width) for s in stages] == [
        ("layer1", 8, 16), ("layer2", 4, 8), ("layer3", 2, 4), ("layer4", 1, 2),
    ]


def test_the_model_is_not_modified_and_keeps_its_train_flags():
    model = create_model("resnet20").train()
    model.layer2.eval()  # a mix of flags must survive
    before = snapshot(model)
    find_stages(model, torch.randn(2, 3, 32, 32))
    assert_unchanged(model, before)


def test_stage_names_are_stable_and_stages_round_trip_through_dicts():
    model = torchvision.models.mobilenet_v2(weights=None, num_classes=10)
    x = torch.randn(1, 3, 32, 32)
    first, second = find_stages(model, x, macs=False), find_stages(model, x, macs=False)
    assert first == second
    data = json.loads(json.dumps([s.to_dict() for s in first]))
    assert [Stage.from_dict(d) for d in data] == first


def test_two_layer_cnn_has_no_stage():
    with pytest.raises(NoStagesError) as err:
        find_stages(two_layer_cnn(), torch.randn(1, 3, 16, 16))
    message = str(err.value)
    assert "\n" not in message
    assert "no stages found in Sequential" in message
    assert "a stage is a run of at least 2 consecutive sibling blocks" in message
    assert "keeps the (B, C, H, W) shape" in message


@pytest.mark.parametrize("name", ["resnet32_global", "resnet_tiny_global", "wrn40_4_global"])
def test_zoo_models_with_one_block_per_stage_have_no_stage(name):
    with pytest.raises(NoStagesError, match="already has Global layers") as err:
        find_stages(create_model(name), torch.randn(1, 3, 32, 32), macs=False)
    assert "\n" not in str(err.value)


def test_global_layers_end_a_run():
    stages = find_stages(create_model("resnet56_global"), torch.randn(1, 3, 32, 32), macs=False)
    # each stage is [block, block, GlobalLayer]: the run is the two blocks
    assert [s.block_paths for s in stages][0] == (("layer1.0",), ("layer1.1",))


def test_a_wrong_example_input_is_one_line():
    with pytest.raises(ExampleInputError) as err:
        find_stages(create_model("resnet20"), torch.randn(2, 1, 32, 32))
    message = str(err.value)
    assert "\n" not in message and "example_input of shape (2, 1, 32, 32)" in message and "RuntimeError" in message
    with pytest.raises(ExampleInputError, match="must be a tensor"):
        find_stages(create_model("resnet20"), [1, 2, 3])
