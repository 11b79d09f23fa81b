"""The memory format a model trains in: channels-last where it is safe, the default layout elsewhere.

Channels-last makes convolutions faster (on this project's 2-core CPU, a resnet32 training step at
batch 64 took 234 ms against 292 ms contiguous), but torch 2.14's oneDNN on the CPU corrupts the heap
in the backward pass of channels-last ResNets with few channels and more than one thread for odd batch
sizes (``double free or corruption`` or a segmentation fault in ``jit_avx512_common_1x1_convolution_bwd_weights``,
e.g. ``resnet_tiny`` at batch 29 on 32x32 images; an epoch's last batch is often odd). Keeping the
1x1 convolutions alone in the default layout did not avoid it, so ``"auto"`` trains channels-last on
CUDA only; ``true`` asks for it on the CPU as well.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

import torch
from torch import nn

__all__ = ["ChannelsLast", "training_layout", "uses_channels_last"]

ChannelsLast = bool | Literal["auto"]


def uses_channels_last(setting: ChannelsLast, device: torch.device) -> bool:
    """Whether ``setting`` (true, false or "auto") trains channels-last on ``device``."""
    return torch.device(device).type == "cuda" if setting == "auto" else bool(setting)


@contextlib.contextmanager
def training_layout(model: nn.Module, *, channels_last: ChannelsLast, device: torch.device) -> Iterator[torch.memory_format]:
    """Put ``model`` (already on ``device``) in the memory format to train in and yield that format; on exit
    the model is contiguous again, as evaluation and export expect."""
    memory_format = torch.channels_last if uses_channels_last(channels_last, device) else torch.contiguous_format
    model.to(memory_format=memory_format)
    try:
        yield memory_format
    finally:
        model.to(memory_format=torch.contiguous_format)
