"""Folding an inference-mode BatchNorm into the convolution before it, with
``torch.nn.utils.fusion.fuse_conv_bn_weights``.

The Global layer's coefficient branches are ``ReLU(BN(dwconv(h)))`` (Kag & Saligrama, CVPR 2022,
Sec. 3.2, Eq. 7). In eval mode BN is the affine map ``y = (x - mean) * gamma / sqrt(var + eps) + beta``
per channel, so with ``scale = gamma / sqrt(var + eps)``

    BN(conv(h; w)) = conv(h; w * scale) + (beta - mean * scale)

and the branch is one convolution with a bias followed by ReLU: one pass over the feature map
instead of two. The folded weights are constants of the layer: :func:`frozen` caches them on the
layer and recomputes them when any tensor they derive from changes (every in-place update bumps a
tensor's version), so they can never be stale after training or loading a state dict.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

__all__ = ["bn_affine", "fold_conv_bn", "frozen"]

T = TypeVar("T")


def fold_conv_bn(conv: nn.Conv2d, bn: nn.modules.batchnorm._BatchNorm) -> tuple[Tensor, Tensor] | None:
    """``(weight, bias)`` of the convolution equal to ``bn(conv(x))`` in eval mode, detached (constants).

    Returns None when ``bn`` normalises with batch statistics even in eval mode
    (``track_running_stats=False``), where there is nothing to fold.
    """
    if bn.running_mean is None or bn.running_var is None:
        return None
    weight, bias = fuse_conv_bn_weights(
        conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
    )
    return weight.detach(), bias.detach()  # (C_out, C_in/g, kh, kw), (C_out,)


def bn_affine(bn: nn.modules.batchnorm._BatchNorm) -> tuple[Tensor, Tensor] | None:
    """``(scale, shift)``, each (C,), with ``bn(x) = scale * x + shift`` in eval mode, or None (no running statistics)."""
    if bn.running_mean is None or bn.running_var is None:
        return None
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale.detach(), shift.detach()


def frozen(layer: nn.Module, name: str, key: Any, build: Callable[[], T], sources: Sequence[Tensor]) -> T:
    """``build()``, cached on ``layer`` under ``name`` while ``key`` and the tensors ``sources`` are unchanged.

    ``sources`` are the tensors the constants derive from; a tensor changed in place (an optimizer step,
    ``load_state_dict``, a BatchNorm statistic updated in training) has a new version. While
    ``torch.export`` or ``torch.compile`` captures a graph (fake tensors: no data pointers, no versions)
    the cached value for ``key`` is taken as it is: a writer runs the model once before it exports.
    """
    cache = layer.__dict__.setdefault("_pdenas_frozen", {})
    if torch.compiler.is_compiling() or torch.compiler.is_exporting():
        hit = cache.get(name)
        return hit[1] if hit is not None and hit[0][0] == key else build()
    stamp = (key, tuple((t.data_ptr(), t._version) for t in sources))
    hit = cache.get(name)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    with torch.no_grad():
        value = build()
    cache[name] = (stamp, value)
    return value
