"""The search: an Optuna multi-objective study over compression plans, scored on validation accuracy
versus MACs, with real training, resumable after any crash.

Each candidate compresses the trained original (trial 0 trains it when no ``weights`` are given), is
assembled from stages distilled from the original's own stage features (``stagewise:``), and is then
fine-tuned with the original as teacher (:func:`train_candidate`). What a study records is read and written through :class:`TrialRecord` (a trial) and :class:`StudyRecord`
(the study: configuration, versions, the original model's figures); its Pareto set is
:func:`pareto_trials`.
"""

from ._candidate import Candidate, TrainedCandidate, prepare_candidate, train_candidate
from ._runner import SearchResult, create_or_load_study, recover_stale_trials, run_worker, search
from ._config import (
    OBJECTIVES,
    Constraints,
    FloatRange,
    HalvingConfig,
    IntRange,
    LatencyConfig,
    Normalization,
    SamplerConfig,
    SearchConfig,
    SearchConfigError,
    SearchSpace,
    StagewiseConfig,
)
from ._context import SearchContext, build_candidate, build_context, candidate_seed, plan_key, training_images
from ._original import ORIGINAL_FILE, use_trained_original
from ._study import StorageOptions, StudyError, StudyLocation, link_study_dir, open_storage, read_config
from ._storage import StorageUnavailable
from ._progress import SearchProgress
from ._defaults import default_space_path
from ._record import FORMAT_VERSION, OriginalModel, RungRecord, StageRecord, StudyRecord, TrialRecord, pareto_trials

__all__ = [
    "FORMAT_VERSION",
    "ORIGINAL_FILE",
    "Candidate",
    "RungRecord",
    "StageRecord",
    "StagewiseConfig",
    "TrainedCandidate",
    "prepare_candidate",
    "train_candidate",
    "use_trained_original",
    "OBJECTIVES",
    "Constraints",
    "FloatRange",
    "HalvingConfig",
    "IntRange",
    "LatencyConfig",
    "Normalization",
    "OriginalModel",
    "SamplerConfig",
    "SearchProgress",
    "SearchConfig",
    "SearchConfigError",
    "SearchContext",
    "SearchResult",
    "SearchSpace",
    "StorageOptions",
    "StorageUnavailable",
    "StudyError",
    "StudyRecord",
    "StudyLocation",
    "TrialRecord",
    "build_candidate",
    "build_context",
    "candidate_seed",
    "create_or_load_study",
    "default_space_path",
    "link_study_dir",
    "open_storage",
    "pareto_trials",
    "plan_key",
    "training_images",
    "read_config",
    "recover_stale_trials",
    "run_worker",
    "search",
]
