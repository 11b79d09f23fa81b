"""Folding an inference-mode BatchNorm into the convolution before it.

The Global layer's coefficient branches are ``ReLU(BN(dwconv(h)))`` (Kag & Saligrama, CVPR 2022,
Sec. 3.2, Eq. 7). In eval mode BN is the affine map ``y = (x - mean) * gamma / sqrt(var + eps) + beta``
per channel, so with ``scale = gamma / sqrt(var + eps)``

    BN(conv(h; w)) = conv(h; w * scale) + (beta - mean * scale)

and the branch is one convolution with a bias followed by ReLU: one pass over the feature map
instead of two. The folded weights are recomputed on every eval forward (``C * 9`` numbers), so
they can never be stale after training or loading a state dict.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["fold_conv_bn"]


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor] | None:
    """``(weight, bias)`` of the convolution equal to ``bn(conv(x))`` in eval mode.

    Returns None when ``bn`` normalises with batch statistics even in eval mode
    (``track_running_stats=False``), where there is nothing to fold.
    """
    if bn.running_mean is None or bn.running_var is None:
        return None
    scale = torch.rsqrt(bn.running_var + bn.eps)  # (C_out,)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale  # (C_out,)
    if bn.bias is not None:
        shift = shift + bn.bias
    if conv.bias is not None:
        shift = shift + conv.bias * scale
    weight = conv.weight * scale.reshape(-1, *([1] * (conv.weight.dim() - 1)))  # (C_out, C_in/g, kh, kw)
    return weight, shift
