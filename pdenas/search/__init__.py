"""The search: an Optuna multi-objective study over compression plans, scored on validation accuracy
versus MACs, with real training, resumable after any crash.

What a study records is read and written through :class:`TrialRecord` (a trial) and :class:`StudyRecord`
(the study: configuration, versions, the original model's figures); its Pareto set is
:func:`pareto_trials`.
"""

from ._runner import SearchResult, create_or_load_study, recover_stale_trials, run_worker, search
from ._config import (
    OBJECTIVES,
    Constraints,
    FloatRange,
    IntRange,
    LatencyConfig,
    SamplerConfig,
    SearchConfig,
    SearchConfigError,
    SearchSpace,
)
from ._context import SearchContext, build_candidate, build_context, candidate_seed, plan_key
from ._study import StorageOptions, StudyError, StudyLocation, link_study_dir, open_storage, read_config
from ._storage import StorageUnavailable
from ._progress import SearchProgress
from ._defaults import default_space_path
from ._record import FORMAT_VERSION, OriginalModel, StudyRecord, TrialRecord, pareto_trials

__all__ = [
    "FORMAT_VERSION",
    "OBJECTIVES",
    "Constraints",
    "FloatRange",
    "IntRange",
    "LatencyConfig",
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
    "read_config",
    "recover_stale_trials",
    "run_worker",
    "search",
]
