"""Where a study lives: a study directory holding the embedded Optuna storage (a journal file, safe
for several processes on one machine, no server), the resolved configuration and the logs; or any
Optuna storage URL (``--storage``).

A study directory records its configuration; a search with a different model, data or search space
against it is refused, never mixed in.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

from .._urls import mask_url
from . import _attrs as A
from ._space import SearchSpace

__all__ = ["StudyLocation", "StudyError", "open_storage", "check_compatible", "DirectoryLock"]

CONFIG_FILE = "config.json"
JOURNAL_FILE = "study.log"
DEFAULT_STUDY_NAME = "pdenas"


class StudyError(RuntimeError):
    """The study cannot be opened or does not match this search; the message says why."""


@dataclass(frozen=True)
class StudyLocation:
    """A study directory, and optionally another storage URL and study name."""

    directory: Path
    storage_url: str | None = None
    study_name: str = DEFAULT_STUDY_NAME

    @property
    def journal_path(self) -> Path:
        return self.directory / JOURNAL_FILE

    @property
    def config_path(self) -> Path:
        return self.directory / CONFIG_FILE

    def describe(self) -> str:
        where = mask_url(self.storage_url) if self.storage_url else str(self.journal_path)
        return f"study '{self.study_name}' in {where}"


def open_storage(location: StudyLocation, **rdb_options: Any) -> optuna.storages.BaseStorage:
    """The Optuna storage of ``location`` (created when missing)."""
    if location.storage_url is None:
        location.directory.mkdir(parents=True, exist_ok=True)
        path = str(location.journal_path)
        try:
            return JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
        except Exception as err:  # a truncated or corrupt journal
            raise StudyError(
                f"the study storage {path} is unreadable ({type(err).__name__}: {_first_line(err)}): "
                "move it aside to start a new study, or restore it from a backup"
            ) from None
    try:
        return optuna.storages.get_storage(location.storage_url) if not rdb_options else optuna.storages.RDBStorage(
            location.storage_url, **rdb_options
        )
    except Exception as err:
        raise StudyError(
            f"cannot open storage {mask_url(location.storage_url)}: {type(err).__name__}: {_first_line(err)}"
        ) from None


def write_config(location: StudyLocation, space: SearchSpace) -> None:
    """Write ``config.json``: where the study is stored, and the resolved search configuration."""
    location.directory.mkdir(parents=True, exist_ok=True)
    data = {
        "format": A.FORMAT_VERSION,
        "storage": location.storage_url,
        "study_name": location.study_name,
        "search": space.to_dict(),
    }
    tmp = location.config_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    if location.storage_url:
        os.chmod(tmp, 0o600)  # the URL may hold a password
    os.replace(tmp, location.config_path)


def read_config(directory: Path) -> dict[str, Any]:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise StudyError(f"{directory} is not a pdenas study directory (no {CONFIG_FILE}): run pdenas search --study-dir {directory} first")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise StudyError(f"{path} is unreadable ({_first_line(err)}): restore it or start a new study directory") from None
    if not isinstance(data, dict) or "study_name" not in data:
        raise StudyError(f"{path} is not a pdenas study configuration: start a new study directory")
    version = data.get("format")
    if version != A.FORMAT_VERSION:
        raise StudyError(
            f"{directory} was written by an incompatible pdenas version (study format {version}, this pdenas reads "
            f"{A.FORMAT_VERSION}): use the pdenas version that created it, or start a new study directory"
        )
    return data


def check_compatible(study: optuna.Study, space: SearchSpace, location: StudyLocation) -> None:
    """Refuse to extend a study created with another model, data or search space."""
    stored = study.user_attrs.get(A.CONFIG)
    if stored is None:
        return
    version = study.user_attrs.get(A.FORMAT)
    if version != A.FORMAT_VERSION:
        raise StudyError(
            f"{location.describe()} was created by an incompatible pdenas (study format {version}, expected "
            f"{A.FORMAT_VERSION}): use another --study-dir"
        )
    ours = space.fingerprint()
    theirs = SearchSpace.from_dict(stored).fingerprint()
    if ours != theirs:
        diffs = _differences(theirs, ours)
        shown = "; ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in diffs[:3])
        more = f" (+{len(diffs) - 3} more)" if len(diffs) > 3 else ""
        raise StudyError(
            f"{location.describe()} was created with different settings ({shown}{more}): "
            "rerun with the same model, data and search space, or use another --study-dir"
        )


def _differences(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[tuple[str, Any, Any]] = []
        for key in sorted(set(old) | set(new)):
            out += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [(prefix.rstrip("."), old, new)]


class DirectoryLock:
    """An exclusive lock on a study directory held by one ``pdenas search`` (and its workers).

    Because the holder is the only process that runs trials in the directory, every trial it finds
    RUNNING when it starts was left by a process that died.
    """

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / ".lock"
        self._file: Any = None

    def __enter__(self) -> "DirectoryLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a+")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            self._file.seek(0)
            holder = self._file.read().strip() or "another process"
            self._file.close()
            raise StudyError(
                f"{self.path.parent} is in use by a running pdenas search ({holder}): wait for it, stop it, "
                "or add workers to it with --workers"
            ) from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"pid {os.getpid()}")
        self._file.flush()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__
