"""The search: an Optuna multi-objective study over compression plans, scored on validation accuracy
versus MACs, with real training, resumable after any crash."""

from ._runner import SearchResult, create_or_load_study, recover_stale_trials, run_worker, search
from ._config import (
    OBJECTIVES,
    Constraints,
    FloatRange,
    IntRange,
    SamplerConfig,
    SearchConfig,
    SearchConfigError,
    SearchSpace,
)
from ._study import StorageOptions, StudyError, StudyLocation, open_storage, read_config
from ._storage import StorageUnavailable
from ._progress import SearchProgress, pareto_rows
from ._defaults import default_space_path

__all__ = [
    "OBJECTIVES",
    "Constraints",
    "FloatRange",
    "IntRange",
    "SamplerConfig",
    "SearchProgress",
    "SearchConfig",
    "SearchConfigError",
    "SearchResult",
    "SearchSpace",
    "StorageOptions",
    "StorageUnavailable",
    "StudyError",
    "StudyLocation",
    "create_or_load_study",
    "default_space_path",
    "open_storage",
    "pareto_rows",
    "read_config",
    "recover_stale_trials",
    "run_worker",
    "search",
]
