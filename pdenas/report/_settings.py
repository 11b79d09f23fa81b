"""The study's settings as (label, text) rows: model, data, budget, search space, seed, versions, ...

Taken from the study's record (its configuration and versions). Every string is passed through
``mask_url`` so a storage URL never shows its password; escaping for HTML is the page's job.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import optuna

from .._urls import mask_url
from ..search import StudyLocation, StudyRecord
from ._study_dir import display_storage

__all__ = ["study_settings"]

# configuration keys shown first, in this order, with these labels; the rest follow under their own names
_KNOWN = (
    ("model", "model"),
    ("dataset", "data"),
    ("budget", "budget"),
    ("source", "search space file"),
    ("seed", "seed"),
    ("space", "search space"),
    ("objectives", "objectives"),
    ("constraints", "constraints"),
    ("sampler", "sampler"),
    ("trials", "trials"),
)


def study_settings(study: optuna.Study, record: StudyRecord, *, location: StudyLocation | None = None) -> tuple[tuple[str, str], ...]:
    rows: list[tuple[str, str]] = [("study", study.study_name)]
    if location is not None:
        rows += [("study directory", str(location.directory)), ("storage", display_storage(location))]
    config = dict(record.config or {})
    for key, label in _KNOWN:
        if key in config:
            rows.append((label, _text(config.pop(key))))
    for key in sorted(config):
        rows.append((str(key).replace("_", " "), _text(config[key])))
    rows += [(f"{name} version", _text(version)) for name, version in record.versions.items()]
    if record.format is not None:
        rows.append(("study format", _text(record.format)))
    return tuple(rows)


def _text(value: Any) -> str:
    """Plain values as themselves, mappings as "key: value, ..." (nested in braces), lists in brackets."""
    value = _masked(value)
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return ", ".join(f"{key}: {_nested(item)}" for key, item in value.items())
    return _nested(value)


def _nested(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{key}: {_nested(item)}" for key, item in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_nested(item) for item in value) + "]"
    if value is None:
        return "none"
    return json.dumps(value) if isinstance(value, bool) else str(value)


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return mask_url(value)
    if isinstance(value, Mapping):
        return {str(k): _masked(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_masked(v) for v in value]
    return value
