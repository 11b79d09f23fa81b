"""Neural-network layers of pdenas: the PDE Global layer (Kag & Saligrama, CVPR 2022)."""

from . import functional
from ._compile import get_compile, set_compile
from ._config import GlobalLayerConfig, GlobalLayerConfigError
from ._gated import GatedGlobalLayer, with_init
from ._forms import FORMS, Form, requested_form, use_form
from ._global_layer import GlobalLayer, GlobalLayerUnstableError
from ._registry import create_global_layer, list_global_layers, register_global_layer

__all__ = [
    "create_global_layer",
    "Form",
    "FORMS",
    "functional",
    "GatedGlobalLayer",
    "get_compile",
    "GlobalLayer",
    "GlobalLayerConfig",
    "GlobalLayerConfigError",
    "GlobalLayerUnstableError",
    "list_global_layers",
    "register_global_layer",
    "requested_form",
    "set_compile",
    "use_form",
    "with_init",
]
