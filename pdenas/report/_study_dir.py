"""Opening the study that ``pdenas search --study-dir DIR`` keeps in a directory.

``DIR/config.json`` (written by the search) says where the study lives:
``{"storage": URL or null, "study_name": NAME, "format": ..., "search": {...}}``. A null storage means
the embedded default, the Optuna journal file ``DIR/study.log``; a URL names any other storage (e.g.
PostgreSQL). The search's own helpers read the file and open the storage, so both agree on its format
and on the journal's lock; here their errors become one-line :class:`ReportError` s, and URLs only
ever appear masked (:func:`pdenas._urls.mask_url`).
"""

from __future__ import annotations

from pathlib import Path

import optuna

from .._urls import mask_url
from ..search import StudyError, StudyLocation, open_storage, read_config
from ._errors import ReportError

__all__ = ["locate_study", "open_study", "display_storage"]


def locate_study(directory: str | Path) -> StudyLocation:
    """Where the study of ``directory`` is stored (from its ``config.json``)."""
    directory = Path(directory)
    try:
        config = read_config(directory)
    except StudyError as err:
        raise ReportError(str(err)) from None
    storage = config.get("storage")
    if storage is not None and (not isinstance(storage, str) or not storage):
        raise ReportError(
            f"{directory / 'config.json'}: 'storage' must be a storage URL or null, not {storage!r}: fix the file"
        )
    return StudyLocation(directory, storage, str(config["study_name"]))


def display_storage(location: StudyLocation) -> str:
    """The storage as it may be shown to a person (password masked)."""
    return mask_url(location.storage_url) if location.storage_url else f"journal file {location.journal_path}"


def open_study(directory: str | Path) -> optuna.Study:
    """Load the study kept in ``directory``; a one-line :class:`ReportError` when that is impossible."""
    location = locate_study(directory)
    if location.storage_url is None and not location.journal_path.is_file():
        raise ReportError(
            f"{location.directory} has config.json but no {location.journal_path.name}: the study was never started "
            f"or its file was moved; rerun pdenas search --study-dir {location.directory}"
        )
    try:
        storage = open_storage(location)
    except StudyError as err:
        raise ReportError(_masked(str(err), location)) from None
    try:
        return optuna.load_study(study_name=location.study_name, storage=storage)
    except KeyError:
        raise ReportError(
            f"study {location.study_name!r} is not in {display_storage(location)}: check 'study_name' in "
            f"{location.config_path}"
        ) from None
    except Exception as err:  # storage drivers raise their own types (connection refused, ...)
        raise ReportError(
            f"cannot load study {location.study_name!r} from {display_storage(location)} "
            f"({type(err).__name__}: {_masked(str(err), location)}): check that the storage is reachable"
        ) from None


def _masked(text: str, location: StudyLocation) -> str:
    if location.storage_url:
        text = text.replace(location.storage_url, mask_url(location.storage_url))
    words = " ".join(mask_url(word) for word in text.split())
    return words if len(words) <= 300 else words[:297] + "..."
