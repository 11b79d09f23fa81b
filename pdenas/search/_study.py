"""Where a study lives: a study directory holding the embedded Optuna storage (a journal file, safe
for several processes on one machine, no server), the resolved configuration and the logs; or any
Optuna storage URL (``--storage``).

A study directory records its configuration; a search with a different model, data or search space
against it is refused, never mixed in.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from filelock import FileLock, Timeout
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

from .._urls import mask_url
from .._util import atomic_write_text, first_line
from ._config import SearchConfig
from ._record import FORMAT_VERSION, StudyRecord
from ._storage import StorageOptions, StudyError, open_rdb_storage

__all__ = [
    "DirectoryLock",
    "StorageOptions",
    "StudyError",
    "StudyLocation",
    "check_compatible",
    "link_study_dir",
    "open_storage",
    "read_config",
    "write_config",
]

CONFIG_FILE = "config.json"
JOURNAL_FILE = "study.log"
DEFAULT_STUDY_NAME = "pdenas"


@dataclass(frozen=True)
class StudyLocation:
    """A study directory, and optionally another storage URL and study name (with how workers sharing
    that storage watch each other: heartbeats, stale trials, reconnects)."""

    directory: Path
    storage_url: str | None = None
    study_name: str = DEFAULT_STUDY_NAME
    options: StorageOptions = StorageOptions()

    @property
    def journal_path(self) -> Path:
        return self.directory / JOURNAL_FILE

    @property
    def config_path(self) -> Path:
        return self.directory / CONFIG_FILE

    def describe(self) -> str:
        where = mask_url(self.storage_url) if self.storage_url else str(self.journal_path)
        return f"study '{self.study_name}' in {where}"


def open_storage(
    location: StudyLocation, *, create: bool = False, wait: bool = False, **rdb_options: Any
) -> optuna.storages.BaseStorage:
    """The Optuna storage of ``location``.

    ``create``: make the study directory's journal when it is missing (the search); otherwise a missing
    journal is a :class:`StudyError` and nothing is written (reading a study never creates files).
    ``wait`` (workers): wait up to ``location.options.reconnect`` seconds for an unreachable server.
    """
    if location.storage_url is None:
        if not create and not location.journal_path.is_file():
            raise StudyError(
                f"{location.directory} holds no study ({location.journal_path.name} is missing): run pdenas search "
                f"--study-dir {location.directory} first"
            )
        location.directory.mkdir(parents=True, exist_ok=True)
        path = str(location.journal_path)
        try:
            return JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
        except Exception as err:  # a corrupt journal
            raise StudyError(
                f"the study storage {path} is unreadable ({_journal_problem(location.journal_path, err)}): "
                "move it aside to start a new study, or restore it from a backup"
            ) from None
    return open_rdb_storage(location.storage_url, location.options, wait=wait, **rdb_options)


def repair_journal(location: StudyLocation) -> list[str]:
    """Undo what a crash can leave in a study directory's journal; what was done, in words.

    Call only while holding the directory's :class:`DirectoryLock` (no one else writes then):
    a half-written last record (a kill or power loss in the middle of a write) is cut off, since the
    next append would glue onto it and make the journal unreadable; it never holds a completed trial's
    result, which is only complete once its record is whole. A lock file left by a process killed while
    writing is removed (otherwise every write would wait out Optuna's 30 s lock grace period).
    """
    notes: list[str] = []
    path = location.journal_path
    lock = Path(str(path) + ".lock")
    if lock.exists():
        lock.unlink(missing_ok=True)
        notes.append(f"removed {lock.name}, a journal lock left by a process that died while writing")
    if not path.is_file() or path.stat().st_size == 0:
        return notes
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        tail = min(size, 1 << 20)
        f.seek(size - tail)
        chunk = f.read(tail)
        if chunk.endswith(b"\n"):
            return notes
        cut = chunk.rfind(b"\n")
        if cut < 0 and tail < size:  # a last record longer than 1 MiB: not a torn write; leave it
            return notes
        keep = size - tail + cut + 1
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    notes.append(f"dropped the half-written last record of {path.name} ({size - keep} bytes, a crash while writing)")
    return notes


def _journal_problem(path: Path, err: BaseException) -> str:
    """Which line of the journal is broken, or the error in one line."""
    try:
        with open(path, "rb") as f:
            for number, line in enumerate(f, start=1):
                try:
                    json.loads(line)
                except ValueError:
                    if not line.endswith(b"\n"):
                        break  # a half-written last record: Optuna skips it
                    return f"line {number} is not a journal record"
    except OSError as io_err:
        return f"{type(io_err).__name__}: {first_line(io_err)}"
    return f"{type(err).__name__}: {first_line(err)}"


def write_config(location: StudyLocation, config: SearchConfig | dict[str, Any]) -> None:
    """Write ``config.json``: where the study is stored, and the resolved search configuration (mode 600
    when the storage URL may hold a password). Several workers of a shared study may write it at once:
    each replaces it whole."""
    data = {
        "format": FORMAT_VERSION,
        "storage": location.storage_url,
        "study_name": location.study_name,
        "search": config.to_dict() if isinstance(config, SearchConfig) else config,
    }
    atomic_write_text(location.config_path, json.dumps(data, indent=2, sort_keys=True),
                      mode=0o600 if location.storage_url else 0o644)


def link_study_dir(directory: Path, storage_url: str, study_name: str) -> StudyLocation:
    """A study directory for the study ``study_name`` on the storage server ``storage_url``: its
    ``config.json`` points at the study, so that report, status, show and export work on it from any
    machine that reaches the storage. An existing directory must already point at that study."""
    location = StudyLocation(Path(directory), storage_url, study_name)
    if location.config_path.is_file():
        config = read_config(location.directory)
        if (config.get("storage"), config.get("study_name")) != (storage_url, study_name):
            other = mask_url(config["storage"]) if config.get("storage") else "its own study.log"
            raise StudyError(f"{location.directory} already holds study '{config.get('study_name')}' in {other}: "
                             "choose another folder with --out")
        return location
    try:
        study = optuna.load_study(study_name=study_name, storage=open_storage(location))
    except KeyError:
        raise StudyError(f"there is no study '{study_name}' in {mask_url(storage_url)}: check --study-name") from None
    write_config(location, StudyRecord.from_study(study, records=[]).config or {})
    return location


def read_config(directory: Path) -> dict[str, Any]:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise StudyError(f"{directory} is not a pdenas study directory (no {CONFIG_FILE}): run pdenas search --study-dir {directory} first")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise StudyError(f"{path} is unreadable ({first_line(err)}): restore it or start a new study directory") from None
    if not isinstance(data, dict) or "study_name" not in data:
        raise StudyError(f"{path} is not a pdenas study configuration: start a new study directory")
    version = data.get("format")
    if version != FORMAT_VERSION:
        raise StudyError(
            f"{directory} was written by an incompatible pdenas version (study format {version}, this pdenas reads "
            f"{FORMAT_VERSION}): use the pdenas version that created it, or start a new study directory"
        )
    return data


def check_compatible(study: optuna.Study, config: SearchConfig, location: StudyLocation) -> None:
    """Refuse to extend a study created with another model, data or search space."""
    record = StudyRecord.from_study(study, records=[])
    if record.config is None:
        return
    if record.format != FORMAT_VERSION:
        raise StudyError(
            f"{location.describe()} was created by an incompatible pdenas (study format {record.format}, expected "
            f"{FORMAT_VERSION}): use another --study-dir"
        )
    ours = config.fingerprint()
    theirs = record.search_config().fingerprint()  # type: ignore[union-attr]
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
    RUNNING when it starts was left by a process that died. The lock is ``filelock``'s (an OS file
    lock on ``.lock``: released by the kernel when the holder dies), taken without waiting; who holds
    it is written beside it in ``.lock.holder`` (a contender may truncate ``.lock`` itself), so a
    second search is refused with one line naming the holder.
    """

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / ".lock"
        self.holder_path = Path(directory) / ".lock.holder"
        self._lock = FileLock(str(self.path), timeout=0)

    def __enter__(self) -> "DirectoryLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except Timeout:
            raise StudyError(
                f"{self.path.parent} is in use by a running pdenas search ({self._holder()}): wait for it, stop it, "
                "or add workers to it with --workers"
            ) from None
        try:
            atomic_write_text(self.holder_path, f"pid {os.getpid()} on {socket.gethostname()}")
        except OSError:  # the note only names the holder in a refusal; the lock is what counts
            pass
        return self

    def __exit__(self, *exc: object) -> None:
        if self._lock.is_locked:
            self.holder_path.unlink(missing_ok=True)  # before the release: the next holder's note stays
            self._lock.release()

    def _holder(self) -> str:
        try:
            text = " ".join(self.holder_path.read_text(errors="replace").split())
        except OSError:  # not written yet, or removed as the holder finished
            text = ""
        return text[:120] or "another process"
