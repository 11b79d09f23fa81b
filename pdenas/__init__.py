"""pdenas: make a CNN smaller and faster by replacing repeated blocks with PDE Global layers.

Builds on Kag & Saligrama, "Condensing CNNs with Partial Differential Equations", CVPR 2022.
"""

__version__ = "0.1.0"

from .nn import GlobalLayer, GlobalLayerConfig
from .zoo import create_model, list_models

__all__ = ["GlobalLayer", "GlobalLayerConfig", "create_model", "list_models", "__version__"]
