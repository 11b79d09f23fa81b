"""Stage-wise distillation of compressed candidates (issue 13): block-wise distillation as in DNA (Li et
al., CVPR 2020) and DONNA (Moons et al., ICCV 2021), with a network stage as the block.

    features = stage_features(original, data, "study/features")       # the original's stage inputs/outputs, once
    store = VariantStore("study/stages")                               # each stage variant trained once, shared
    model, stages = assemble(original, plan, features=features, store=store)
    stages["layer2"].loss                                              # normalised MSE on held-out features

A stage variant (stage, kept blocks, Global layer or none, local recipe, original) is trained to map
the original's stage input to its stage output, with only that stage run, then stored under a key
derived from the variant; every later candidate containing it loads it.
"""

from ._assemble import Assembly, assemble
from ._distill import distill_stage, make_variant, stage_loss
from ._errors import DistillError, FeaturesError, StageNotComposableError
from ._features import StageFeatures, stage_features
from ._fingerprint import model_fingerprint
from ._recipe import StageRecipe
from ._stage_module import StageModule
from ._store import VariantStore
from ._variant import StageResult, StageVariant

__all__ = [
    "Assembly",
    "DistillError",
    "FeaturesError",
    "StageFeatures",
    "StageModule",
    "StageNotComposableError",
    "StageRecipe",
    "StageResult",
    "StageVariant",
    "VariantStore",
    "assemble",
    "distill_stage",
    "make_variant",
    "model_fingerprint",
    "stage_features",
    "stage_loss",
]
