"""Wide ResNet WRN-40-4 (Zagoruyko & Komodakis, 2016) and its Global counterpart (Kag & Saligrama,
CVPR 2022, Table 2).

WRN-40-4 has 3 stages of m = 6 pre-activation blocks at widths 64/128/256. In ``wrn40_4_global``
each stage keeps its first (transition) block and replaces the other five with one Global layer
whose ``init_block`` is an original block, as the paper's WRN variant does.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from ..nn import GlobalLayer, GlobalLayerConfig
from ._registry import register_model

__all__ = ["WideBasicBlock", "WideResNet"]


class WideBasicBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus shortcut (1x1 conv if shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=False)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:  # x: (B, C_in, H, W)
        out = self.relu(self.bn1(x))
        identity = self.shortcut(out) if not isinstance(self.shortcut, nn.Identity) else x
        out = self.conv1(out)  # (B, C_out, H/s, W/s)
        out = self.conv2(self.relu(self.bn2(out)))
        return out + identity


class WideResNet(nn.Module):
    def __init__(
        self,
        depth: int = 40,
        widen: int = 4,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        global_config: GlobalLayerConfig | None = None,
    ) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n + 4, got {depth}")
        m = (depth - 4) // 6
        widths: Sequence[int] = [16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        channels = 16
        for i, (width, stride) in enumerate(zip(widths, [1, 2, 2]), start=1):
            blocks: list[nn.Module] = [WideBasicBlock(channels, width, stride)]
            if global_config is None:
                blocks += [WideBasicBlock(width, width) for _ in range(m - 1)]
            else:
                blocks.append(
                    GlobalLayer(width, global_config, init_block=WideBasicBlock(width, width), name=f"layer{i}.1")
                )
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
            channels = width
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:  # x: (B, 3, H, W)
        x = self.conv1(x)  # (B, 16, H, W)
        x = self.layer3(self.layer2(self.layer1(x)))  # (B, 64k, H/4, W/4)
        x = self.relu(self.bn(x))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


@register_model
def wrn40_4(*, num_classes: int = 10, in_channels: int = 3) -> WideResNet:
    return WideResNet(40, 4, num_classes=num_classes, in_channels=in_channels)


@register_model
def wrn40_4_global(
    *, num_classes: int = 10, in_channels: int = 3, iterations: int = 1, dt: float = 0.2, **settings: object
) -> WideResNet:
    config = GlobalLayerConfig(iterations=iterations, dt=dt, **settings)
    return WideResNet(40, 4, num_classes=num_classes, in_channels=in_channels, global_config=config)
