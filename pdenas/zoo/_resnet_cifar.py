"""CIFAR ResNets (He et al., 2016) and their Global-layer counterparts (Kag & Saligrama, CVPR 2022,
Sec. 4.1 and Table 1).

``resnet20/32/56`` have 3 stages of m = 3/5/9 BasicBlocks at widths 16/32/64 with 1x1-conv+BN
shortcuts where the shape changes. The paper's ``resnet32_global``/``resnet56_global`` keep 4 stages
of m = 1/2 blocks at widths 16/32/64/64 and put a Global layer (K = 1, dt = 0.2) after stages 1-3.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from ..nn import GlobalLayer, GlobalLayerConfig
from ._registry import register_model

__all__ = ["BasicBlock", "CifarResNet"]


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus shortcut, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:  # x: (B, C_in, H, W)
        identity = self.shortcut(x)  # (B, C_out, H/s, W/s)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class CifarResNet(nn.Module):
    """3x3 stem, stages of BasicBlocks (``layer1``...), optional Global layer per stage, pool, linear.

    Args:
        depths: blocks per stage (m).
        widths: channels per stage.
        strides: stride of each stage's first block.
        global_layers: per stage, the config of a Global layer appended to the stage, or None.
    """

    def __init__(
        self,
        depths: Sequence[int],
        widths: Sequence[int],
        strides: Sequence[int],
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        global_layers: Sequence[GlobalLayerConfig | None] | None = None,
    ) -> None:
        super().__init__()
        global_layers = list(global_layers) if global_layers is not None else [None] * len(depths)
        if not len(depths) == len(widths) == len(strides) == len(global_layers):
            raise ValueError("depths, widths, strides and global_layers must have one entry per stage")
        self.conv1 = _conv3x3(in_channels, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        channels = widths[0]
        for i, (m, width, stride, glob) in enumerate(zip(depths, widths, strides, global_layers), start=1):
            blocks: list[nn.Module] = [BasicBlock(channels, width, stride)]
            blocks += [BasicBlock(width, width) for _ in range(m - 1)]
            if glob is not None:
                blocks.append(GlobalLayer(width, glob, name=f"layer{i}.{m}"))
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
            channels = width
        self.num_stages = len(depths)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        _init_weights(self)

    def forward(self, x: Tensor) -> Tensor:  # x: (B, 3, H, W)
        x = self.relu(self.bn1(self.conv1(x)))  # (B, C_1, H, W)
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{i}")(x)
        x = torch.flatten(self.avgpool(x), 1)  # (B, C_last)
        return self.fc(x)


def _init_weights(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def _global_config(iterations: int, dt: float, **settings: object) -> GlobalLayerConfig:
    return GlobalLayerConfig(iterations=iterations, dt=dt, **settings)


@register_model
def resnet20(*, num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    return CifarResNet([3, 3, 3], [16, 32, 64], [1, 2, 2], num_classes=num_classes, in_channels=in_channels)


@register_model
def resnet32(*, num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    return CifarResNet([5, 5, 5], [16, 32, 64], [1, 2, 2], num_classes=num_classes, in_channels=in_channels)


@register_model
def resnet56(*, num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    return CifarResNet([9, 9, 9], [16, 32, 64], [1, 2, 2], num_classes=num_classes, in_channels=in_channels)


@register_model
def resnet32_global(
    *, num_classes: int = 10, in_channels: int = 3, iterations: int = 1, dt: float = 0.2, **settings: object
) -> CifarResNet:
    glob = _global_config(iterations, dt, **settings)
    return CifarResNet(
        [1, 1, 1, 1], [16, 32, 64, 64], [1, 2, 2, 2],
        num_classes=num_classes, in_channels=in_channels, global_layers=[glob, glob, glob, None],
    )


@register_model
def resnet56_global(
    *, num_classes: int = 10, in_channels: int = 3, iterations: int = 1, dt: float = 0.2, **settings: object
) -> CifarResNet:
    glob = _global_config(iterations, dt, **settings)
    return CifarResNet(
        [2, 2, 2, 2], [16, 32, 64, 64], [1, 2, 2, 2],
        num_classes=num_classes, in_channels=in_channels, global_layers=[glob, glob, glob, None],
    )


@register_model
def resnet_tiny(*, num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """A low-budget ResNet: 4 stages of m = 5 at widths 6/8/8/8."""
    return CifarResNet([5, 5, 5, 5], [6, 8, 8, 8], [1, 2, 2, 2], num_classes=num_classes, in_channels=in_channels)


@register_model
def resnet_tiny_global(
    *, num_classes: int = 10, in_channels: int = 3, iterations: int = 5, dt: float = 0.2, **settings: object
) -> CifarResNet:
    """The low-budget Global counterpart: 4 stages of m = 1 at widths 9/9/16/16, K = 5."""
    glob = _global_config(iterations, dt, **settings)
    return CifarResNet(
        [1, 1, 1, 1], [9, 9, 16, 16], [1, 2, 2, 2],
        num_classes=num_classes, in_channels=in_channels, global_layers=[glob, glob, glob, None],
    )
