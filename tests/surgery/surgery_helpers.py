"""Models and checks shared by the surgery tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pdenas.nn import GlobalLayer
from pdenas.surgery import CompressionPlan, Stage

# torchvision models of issue 3, at 3x32x32 (the smallest size all of them take) and batch 2.
TORCHVISION_MODELS = [
    "resnet18", "resnet50", "wide_resnet50_2", "mobilenet_v2", "mobilenet_v3_small",
    "efficientnet_b0", "regnet_x_400mf", "convnext_tiny", "vgg11_bn",
]

# (stage name, m) found at 3x32x32; see the module docstring of pdenas.surgery._stages.
EXPECTED_STAGES: dict[str, list[tuple[str, int]]] = {
    "resnet20": [("layer1", 3), ("layer2", 3), ("layer3", 3)],
    "resnet32": [("layer1", 5), ("layer2", 5), ("layer3", 5)],
    "resnet56": [("layer1", 9), ("layer2", 9), ("layer3", 9)],
    "resnet56_global": [("layer1", 2), ("layer2", 2), ("layer3", 2), ("layer4", 2)],
    "resnet_tiny": [("layer1", 5), ("layer2", 5), ("layer3", 5), ("layer4", 5)],
    "wrn40_4": [("layer1", 6), ("layer2", 6), ("layer3", 6)],
    "tv:resnet18": [("layer1", 2), ("layer2", 2), ("layer3", 2), ("layer4", 2)],
    "tv:resnet50": [("layer1", 3), ("layer2", 4), ("layer3", 6), ("layer4", 3)],
    "tv:wide_resnet50_2": [("layer1", 3), ("layer2", 4), ("layer3", 6), ("layer4", 3)],
    "tv:mobilenet_v2": [
        ("features.2-3", 2), ("features.4-6", 3), ("features.7-10", 4), ("features.11-13", 3),
        ("features.14-16", 3), ("features.17.conv", 2),
    ],
    "tv:mobilenet_v3_small": [
        ("features.1.block", 3), ("features.2-3", 2), ("features.4-6", 3), ("features.7-8", 2), ("features.9-11", 3),
    ],
    "tv:efficientnet_b0": [
        ("features.1.0.block", 2), ("features.2", 2), ("features.3", 2), ("features.4", 3), ("features.5", 3),
        ("features.6", 4), ("features.7.0.block", 3),
    ],
    "tv:regnet_x_400mf": [
        ("trunk_output.block1.block1-0.f", 2), ("trunk_output.block2", 2), ("trunk_output.block3", 7),
        ("trunk_output.block4", 12),
    ],
    "tv:convnext_tiny": [("features.1", 3), ("features.3", 3), ("features.5", 9), ("features.7", 3)],
    "tv:vgg11_bn": [("features.8-13", 2), ("features.15-20", 2), ("features.22-27", 2)],
}


def plain_cnn(in_channels: int = 3, num_classes: int = 10) -> nn.Sequential:
    """A hand-written nn.Sequential CNN: two stages of conv(-BN)-ReLU units split by a max-pool."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),  # 0-2: transition
        nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),  # 3-5
        nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),  # 6-8
        nn.MaxPool2d(2),  # 9: ends the run
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),  # 10-11: transition
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),  # 12-13
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes),
    )


def two_layer_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )


class ListNet(nn.Module):
    """Blocks in an nn.ModuleList, glued by functional ReLUs in a hand-written forward."""

    def __init__(self, blocks: int = 4) -> None:
        super().__init__()
        self.head = nn.Linear(8, 10)  # registered first, called last
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.ModuleList(nn.Conv2d(8, 8, 3, padding=1) for _ in range(blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))  # (B, 8, H, W)
        for block in self.blocks:
            x = F.relu(block(x))
        return self.head(x.mean(dim=(2, 3)))


def snapshot(model: nn.Module) -> tuple[dict[str, torch.Tensor], str, list[bool]]:
    """Everything about a model a surgery must not change: weights, structure, train flags."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return state, repr(model), [m.training for m in model.modules()]


def assert_unchanged(model: nn.Module, before: tuple[dict[str, torch.Tensor], str, list[bool]]) -> None:
    state, structure, modes = before
    now = model.state_dict()
    assert list(now) == list(state)
    for key, value in state.items():
        assert torch.equal(now[key], value), f"{key} changed"
    assert repr(model) == structure
    assert [m.training for m in model.modules()] == modes
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules()), "hooks left behind"


def dropped_paths(stages: list[Stage], plan: CompressionPlan) -> set[str]:
    paths = set()
    for stage in stages:
        stage_plan = plan.stages.get(stage.name)
        if stage_plan is not None:
            paths.update(p for block in stage.block_paths[stage_plan.keep:] for p in block)
    return paths


def assert_weights_inherited(
    original: dict[str, torch.Tensor], compressed: nn.Module, stages: list[Stage], plan: CompressionPlan
) -> None:
    """Tensor by tensor: kept blocks and all layers outside the stages carry the original weights;
    dropped blocks are gone; every new tensor belongs to a Global layer."""
    dropped = dropped_paths(stages, plan)
    under = lambda key, paths: any(key.startswith(p + ".") for p in paths)  # noqa: E731
    new_state = compressed.state_dict()
    global_paths = {p for p, m in compressed.named_modules() if isinstance(m, GlobalLayer)}
    for key, value in original.items():
        if under(key, dropped):
            assert key not in new_state or under(key, global_paths), f"{key} of a dropped block survived"
        else:
            assert key in new_state, f"{key} missing from the compressed model"
            assert torch.equal(new_state[key], value), f"{key} was not carried over unchanged"
    for key in new_state:
        assert key in original or under(key, global_paths), f"unexpected new tensor {key}"


def train_steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> list[float]:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses

