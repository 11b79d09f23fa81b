"""A trial's compression plan in words, e.g. "layer1: keep 1 + Global K=3 dt=0.21; layer2: untouched".

The search stores the words itself (trial user attribute PLAN_TEXT); this rebuilds them from the
stored plan dict (PLAN) for trials that lack them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from optuna.trial import FrozenTrial

from ..search import _attrs

__all__ = ["plan_text", "describe_plan"]

# keys under which a stage may record how many blocks it has (the "m" of "keep k of m")
_BLOCK_COUNT_KEYS = ("blocks", "num_blocks", "of", "total")


def plan_text(trial: FrozenTrial) -> str:
    """The plan of ``trial`` in words: PLAN_TEXT when stored, else built from PLAN, else ``""``."""
    text = trial.user_attrs.get(_attrs.PLAN_TEXT)
    if isinstance(text, str) and text:
        return text
    plan = trial.user_attrs.get(_attrs.PLAN)
    if isinstance(plan, Mapping):
        return describe_plan(plan)
    return ""


def describe_plan(plan: Mapping[str, Any]) -> str:
    """``{"stages": {"layer1": {"keep": 1, "global_layer": {"iterations": 3, "dt": 0.21}}}}`` in words."""
    stages = plan.get("stages")
    if not isinstance(stages, Mapping) or not stages:
        return json.dumps(dict(plan), sort_keys=True, default=str)
    return "; ".join(f"{name}: {_describe_stage(spec)}" for name, spec in stages.items())


def _describe_stage(spec: Any) -> str:
    if not isinstance(spec, Mapping) or not spec:
        return "untouched"
    keep = spec.get("keep")
    total = next((spec[key] for key in _BLOCK_COUNT_KEYS if spec.get(key) is not None), None)
    glob = spec.get("global_layer")
    if not glob and (keep is None or keep == total):
        return "untouched"
    parts = []
    if keep is not None:
        parts.append(f"keep {keep}" + (f" of {total}" if total is not None else ""))
    if glob:
        parts.append(_describe_global(glob))
    return " + ".join(parts)


def _describe_global(glob: Any) -> str:
    if not isinstance(glob, Mapping):
        return "Global"
    words = ["Global"]
    if glob.get("iterations") is not None:
        words.append(f"K={glob['iterations']}")
    if glob.get("dt") is not None:
        dt = glob["dt"]
        words.append(f"dt={dt:.3g}" if isinstance(dt, (int, float)) else f"dt={dt}")
    return " ".join(words)
