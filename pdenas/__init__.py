"""pdenas: make a CNN smaller and faster by replacing repeated blocks with PDE Global layers.

Builds on Kag & Saligrama, "Condensing CNNs with Partial Differential Equations", CVPR 2022.
"""

__version__ = "0.1.0"

from .cost import Cost, latency, profile
from .nn import GlobalLayer, GlobalLayerConfig, create_global_layer, list_global_layers
from .surgery import (
    CompressionPlan,
    NoStagesError,
    PlanError,
    Stage,
    StagePlan,
    build_model,
    compress,
    find_stages,
    load_compressed,
    load_weights,
    save_compressed,
)
from .zoo import create_model, list_models

__all__ = [
    "CompressionPlan",
    "Cost",
    "GlobalLayer",
    "GlobalLayerConfig",
    "NoStagesError",
    "PlanError",
    "Stage",
    "StagePlan",
    "__version__",
    "build_model",
    "compress",
    "create_global_layer",
    "create_model",
    "find_stages",
    "latency",
    "list_global_layers",
    "list_models",
    "load_compressed",
    "load_weights",
    "profile",
    "save_compressed",
]
