"""The paper's architectures (Kag & Saligrama, CVPR 2022), created by name."""

from . import _resnet_cifar, _wrn  # noqa: F401  (registers the models)
from ._registry import UnknownModelError, create_model, list_models, register_model
from ._resnet_cifar import BasicBlock, CifarResNet
from ._wrn import WideBasicBlock, WideResNet

__all__ = [
    "BasicBlock",
    "CifarResNet",
    "UnknownModelError",
    "WideBasicBlock",
    "WideResNet",
    "create_model",
    "list_models",
    "register_model",
]
