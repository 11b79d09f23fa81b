"""Compressing any CNN (Kag & Saligrama, "Condensing CNNs with Partial Differential Equations",
CVPR 2022): find the stages where a block repeats, keep a few blocks of each and put one Global layer
(a PDE solver layer) in place of the rest.

    stages = find_stages(model, example_input)           # what can be condensed
    plan = CompressionPlan.paper(stages)                 # keep 1 block + a K = 1 Global layer per stage
    small = compress(model, plan, example_input)         # a new model; `model` is untouched
    save_compressed("small.pt", small, plan=plan, model_spec="resnet56", input_size=(3, 32, 32))
    small = load_compressed("small.pt")
"""

from .._model_spec import ModelSpecError, WeightsError, build_model, load_weights
from ._checkpoint import CheckpointError, load_compressed, save_compressed
from ._compress import compress
from ._plan import CompressionPlan, PlanError, StagePlan
from ._stages import STAGE_DEFINITION, NoStagesError, Stage, find_stages
from ._trace import ExampleInputError

__all__ = [
    "STAGE_DEFINITION",
    "CheckpointError",
    "CompressionPlan",
    "ExampleInputError",
    "ModelSpecError",
    "NoStagesError",
    "PlanError",
    "Stage",
    "StagePlan",
    "WeightsError",
    "build_model",
    "compress",
    "find_stages",
    "load_compressed",
    "load_weights",
    "save_compressed",
]
