"""A shared study on a database server (``--storage postgresql://...``): heartbeats, stale trials and
their retries, and surviving a short loss of the connection.

Every worker sends a heartbeat for the trial it runs (every ``StorageOptions.heartbeat`` seconds, from a
thread of its own). A RUNNING trial whose heartbeat is older than ``grace_period`` belongs to a worker
that died (kill -9, a lost machine): the next worker that looks (before asking for a trial, and while it
waits) marks it failed with the reason and queues its plan again as a new trial that records which trial
it retries (``retry_of``; Optuna's ``failed_trial``/``retry_history`` system attributes), at most
``max_retry`` times in a row. The original model's trial is always retried: every report needs it.

Each storage call that fails because the connection dropped (a server restart, a network blip) is
retried with backoff for up to ``reconnect`` seconds; after that the worker stops with a one-line
:class:`StorageUnavailable`, and rerunning it continues the study. URLs only ever appear masked.
"""

from __future__ import annotations

import copy
import functools
import logging
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from .._optuna import (
    RDB_PRIVATE_METHODS,
    BaseHeartbeat,
    backend_of,
    is_heartbeat_enabled,
    retries_so_far,
    retry_system_attrs,
    running_trials_without_heartbeat,
    stale_trial_ids,
    storage_of,
    study_id,
)
from .._urls import MASK, SECRET_QUERY_KEYS, mask_url
from .._util import first_line
from ._record import TrialRecord

__all__ = [
    "StudyError",
    "StorageUnavailable",
    "StorageOptions",
    "ResilientRDBStorage",
    "RetryStaleTrial",
    "fail_stale_trials",
    "heartbeat",
    "is_connection_error",
    "scrub",
    "setup_lock",
]

log = logging.getLogger("pdenas.search")


class StudyError(RuntimeError):
    """The study cannot be opened or does not match this search; the message says why."""


class StorageUnavailable(StudyError):
    """The storage server could not be reached for longer than the reconnect window."""


@dataclass(frozen=True)
class StorageOptions:
    """How workers on a storage server watch each other (seconds) and how long they wait for it."""

    heartbeat: int = 20  # seconds between a running trial's heartbeats
    grace_period: int = 60  # a RUNNING trial without a heartbeat for this long is stale
    max_retry: int = 3  # a stale trial is re-run at most this many times in a row
    reconnect: float = 60.0  # seconds to keep retrying a storage call after the connection dropped

    def __post_init__(self) -> None:
        if self.heartbeat < 1:
            raise StudyError(f"--heartbeat must be >= 1 second, got {self.heartbeat}")
        if self.grace_period <= self.heartbeat:
            raise StudyError(
                f"--grace-period ({self.grace_period} s) must be longer than --heartbeat ({self.heartbeat} s), "
                "or live trials would be taken for dead ones"
            )
        if self.max_retry < 0:
            raise StudyError(f"--max-retry must be >= 0, got {self.max_retry}")
        if self.reconnect < 0:
            raise StudyError(f"--reconnect must be >= 0 seconds, got {self.reconnect}")


# ------------------------------------------------------------------------------------ masking


def scrub(text: str, url: str | None) -> str:
    """``text`` with ``url`` and its password masked, and any other URL in it masked too."""
    if url:
        text = text.replace(url, mask_url(url))
        for secret in _secrets(url):
            # a short password is only masked where it sits in a URL, not inside ordinary words
            text = text.replace(secret, MASK) if len(secret) >= 4 else text.replace(f":{secret}@", f":{MASK}@")
    return " ".join(mask_url(word) for word in text.split(" "))


def _secrets(url: str) -> set[str]:
    from urllib.parse import parse_qsl, unquote, urlsplit

    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return set()
    found = {password, unquote(password)} if password else set()
    for key, value in parse_qsl(parts.query):
        if key.lower() in SECRET_QUERY_KEYS:
            found |= {value, unquote(value)}
    return {s for s in found if s}



# ------------------------------------------------------------------------- connection errors


def is_connection_error(err: BaseException | None) -> bool:
    """True when ``err`` (or what caused it) says the database connection is gone or refused."""
    try:
        import sqlalchemy.exc as sa_exc
    except ImportError:  # pragma: no cover - optuna's RDB storage needs SQLAlchemy
        return False
    seen = 0
    while err is not None and seen < 10:
        if isinstance(err, (sa_exc.OperationalError, sa_exc.InterfaceError)):
            return True
        if isinstance(err, sa_exc.DBAPIError) and err.connection_invalidated:
            return True
        if type(err).__module__.startswith(("psycopg", "psycopg2")) and type(err).__name__ in (
            "OperationalError", "InterfaceError", "AdminShutdown", "ConnectionTimeout",
        ):
            return True
        err = err.__cause__ or err.__context__
        seen += 1
    return False


def _is_creation_race(err: BaseException | None) -> bool:
    """True for the errors of two processes creating Optuna's tables in a new database at once."""
    seen = 0
    while err is not None and seen < 10:
        name = type(err).__name__
        if name in ("UniqueViolation", "DuplicateTable", "DuplicateObject"):
            return True
        if name in ("IntegrityError", "ProgrammingError") and "already exists" in str(err):
            return True
        err = err.__cause__ or err.__context__
        seen += 1
    return False


def _root_message(err: BaseException) -> str:
    """The driver's own words (``connection refused``, ``terminating connection``), not the wrappers'."""
    chain: list[BaseException] = []
    cur: BaseException | None = err
    while cur is not None and len(chain) < 10:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    for prefixes in (("psycopg", "psycopg2"), ("sqlalchemy",)):
        for item in chain:
            if type(item).__module__.startswith(prefixes) and first_line(item) != type(item).__name__:
                text = first_line(item)
                for prefix in ("(psycopg.OperationalError) ", "(psycopg2.OperationalError) ", "connection failed: "):
                    text = text.removeprefix(prefix)
                return text
    return f"{type(err).__name__}: {first_line(err)}"


_no_retry = threading.local()  # set in threads that retry on their own (the heartbeat)


def _retrying(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(self: "ResilientRDBStorage", *args: Any, **kwargs: Any) -> Any:
        if getattr(_no_retry, "depth", 0):  # nested call, or a thread that handles errors itself
            return method(self, *args, **kwargs)
        _no_retry.depth = 1
        try:
            return self._with_reconnect(method.__name__, lambda: method(self, *args, **kwargs))
        finally:
            _no_retry.depth = 0

    return call


class ResilientRDBStorage(RDBStorage):
    """Optuna's RDBStorage, whose calls wait out a dropped connection (a server restart) for up to
    ``reconnect`` seconds, then raise :class:`StorageUnavailable` with a one-line, masked message."""

    reconnect_seconds: float = 60.0

    def _with_reconnect(self, what: str, call: Callable[[], Any]) -> Any:
        deadline = time.monotonic() + self.reconnect_seconds
        delay = 0.5
        warned = False
        while True:
            try:
                return call()
            except Exception as err:
                if not is_connection_error(err):
                    raise
                if time.monotonic() + delay > deadline:
                    raise StorageUnavailable(connection_lost_message(self.url, err, self.reconnect_seconds)) from None
                if not warned:
                    log.warning("lost the connection to %s (%s); reconnecting", mask_url(self.url),
                                scrub(_root_message(err), self.url))
                    warned = True
                time.sleep(delay)
                delay = min(delay * 2, 8.0)


_RETRIED = (
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr", "get_study_id_from_name",
    "get_study_name_from_id", "get_study_directions", "get_study_user_attrs", "get_study_system_attrs",
    "get_all_studies", "create_new_trial", "set_trial_param", "get_trial_id_from_study_id_trial_number",
    "get_trial_number_from_id", "get_trial_param", "set_trial_state_values", "set_trial_intermediate_value",
    "set_trial_user_attr", "set_trial_system_attr", "get_trial", "get_all_trials", "get_n_trials",
    "get_best_trial", "record_heartbeat", *RDB_PRIVATE_METHODS,
)
for _name in _RETRIED:
    if hasattr(RDBStorage, _name):
        setattr(ResilientRDBStorage, _name, _retrying(getattr(RDBStorage, _name)))


def connection_lost_message(url: str, err: BaseException, waited: float) -> str:
    return (
        f"lost the connection to {mask_url(url)} ({scrub(_root_message(err), url)}; still failing after "
        f"{waited:g} s): check the database server, then rerun the worker to continue "
        "(a trial it was running is retried by the other workers)"
    )


def open_rdb_storage(url: str, options: StorageOptions, *, wait: bool = False, **rdb_options: Any) -> ResilientRDBStorage:
    """An RDB storage with heartbeats, stale-trial retries, pre-pinged connections and reconnects.

    ``wait``: if the server cannot be reached, keep trying for ``options.reconnect`` seconds (a worker
    started while the server restarts); otherwise (reports, status) fail at once.
    """
    kwargs: dict[str, Any] = {
        "heartbeat_interval": options.heartbeat,
        "grace_period": options.grace_period,
        "heartbeat_stale_trial_callback": RetryStaleTrial(options.max_retry),
        "engine_kwargs": {"pool_pre_ping": True},
    }
    kwargs.update(rdb_options)
    deadline = time.monotonic() + (options.reconnect if wait else 0.0)
    delay = 0.5
    races = 0
    while True:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = ResilientRDBStorage(url, **kwargs)
            storage.reconnect_seconds = options.reconnect
            return storage
        except Exception as err:
            if races < 10 and _is_creation_race(err):  # another worker is creating the tables right now
                races += 1
                time.sleep(0.2 * races)
                continue
            if is_connection_error(err) and time.monotonic() + delay <= deadline:
                if delay == 0.5:
                    log.warning("cannot reach %s (%s); retrying for up to %g s", mask_url(url),
                                scrub(_root_message(err), url), options.reconnect)
                time.sleep(delay)
                delay = min(delay * 2, 8.0)
                continue
            what = _root_message(err) if is_connection_error(err) else f"{type(err).__name__}: {first_line(err)}"
            raise StudyError(f"cannot open storage {mask_url(url)}: {scrub(what, url)}") from None


# ------------------------------------------------------------------------------ study setup


@contextmanager
def setup_lock(storage: optuna.storages.BaseStorage, study_name: str) -> Iterator[None]:
    """Serialise creating and configuring a study among workers starting at once (PostgreSQL: an
    advisory lock; other storages: nothing, one process sets them up)."""
    backend = backend_of(storage)
    if not isinstance(backend, RDBStorage) or backend.engine.dialect.name != "postgresql":
        yield
        return
    import sqlalchemy

    key = {"k": f"pdenas:{study_name}"}

    def lock() -> Any:
        conn = backend.engine.connect()
        try:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(hashtext(:k))"), key)
        except BaseException:
            conn.close()
            raise
        return conn

    conn = backend._with_reconnect("lock", lock) if isinstance(backend, ResilientRDBStorage) else lock()
    try:
        yield
    finally:
        try:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(hashtext(:k))"), key)
            conn.commit()
        except Exception:  # the lock dies with the connection anyway
            pass
        conn.close()


# ------------------------------------------------------------------------- heartbeats, retries


class RetryStaleTrial(RetryHeartbeatStaleTrialCallback):
    """Optuna's retry of heartbeat-stale trials, recording pdenas' ``retry_of`` on the new trial and
    carrying over only what defines the trial (its parameters, whether it is the original model), not
    the dead trial's partial results."""

    def __init__(self, max_retry: int | None = 3) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            super().__init__(max_retry=max_retry)
        self.max_retry = max_retry

    def retries_so_far(self, trial: FrozenTrial) -> int:
        return retries_so_far(trial)

    def will_retry(self, trial: FrozenTrial) -> bool:
        if TrialRecord.from_trial(trial).reference:
            return True
        return self.max_retry is None or retries_so_far(trial) < self.max_retry

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if not self.will_retry(trial):
            return
        system_attrs = retry_system_attrs(trial)  # the retry history, not the dead trial's constraint values
        user_attrs = TrialRecord.from_trial(trial).retry_attrs()
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
                user_attrs=user_attrs, system_attrs=system_attrs,
            )
        )


STALE = "the worker running it stopped sending heartbeats (killed, or its machine or connection lost): stale trial"

# trials seen RUNNING with no heartbeat at all (the worker died between creating the trial and its first
# heartbeat): (study id, trial id) -> when this process first saw them so
_silent_since: dict[tuple[int, int], float] = {}


def fail_stale_trials(study: optuna.Study) -> list[int]:
    """Fail the study's stale trials with the reason and queue their retries; the numbers failed here.

    Like ``optuna.storages.fail_stale_trials`` (which ``Study.optimize`` calls), for pdenas' ask/tell
    loop; it also catches trials that never sent a heartbeat, which Optuna never considers stale.
    """
    storage = storage_of(study)
    if not is_heartbeat_enabled(storage):
        return []
    stale = set(stale_trial_ids(storage, study_id(study))) | _silent_trials(study)
    return fail_and_retry(study, sorted(stale), STALE)


def fail_and_retry(study: optuna.Study, trial_ids: list[int], reason: str) -> list[int]:
    """Mark RUNNING trials failed with ``reason`` and queue their retries (heartbeat storages)."""
    storage = storage_of(study)
    callback = storage.get_heartbeat_stale_trial_callback() if isinstance(storage, BaseHeartbeat) else None
    failed: list[int] = []
    for trial_id in trial_ids:
        try:
            trial = storage.get_trial(trial_id)
            if trial.state != TrialState.RUNNING:
                continue
            why = reason
            if isinstance(callback, RetryStaleTrial):
                if callback.will_retry(trial):
                    why += "; re-queued as a new trial"
                else:
                    why += f"; not retried: already retried {callback.retries_so_far(trial)} times (--max-retry)"
            TrialRecord.write_to_storage(storage, trial_id, failure=why)
            if storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                failed.append(trial_id)
        except UpdateFinishedTrialError:  # another worker got there first
            continue
    numbers = []
    for trial_id in failed:
        trial = copy.deepcopy(storage.get_trial(trial_id))
        numbers.append(trial.number)
        if callback is not None:
            callback(study, trial)
    return numbers


def _silent_trials(study: optuna.Study) -> set[int]:
    """RUNNING trials that have had no heartbeat at all for longer than the grace period (as seen here)."""
    backend = backend_of(storage_of(study))
    if not isinstance(backend, RDBStorage):
        return set()
    key = study_id(study)

    def run() -> set[int]:
        return running_trials_without_heartbeat(backend.engine, key)

    try:
        ids = backend._with_reconnect("query", run) if isinstance(backend, ResilientRDBStorage) else run()
    except StorageUnavailable:
        raise
    except Exception:  # another schema (an Optuna that renamed its tables): Optuna's own check only
        return set()
    now = time.monotonic()
    grace = backend.grace_period or 2 * (backend.heartbeat_interval or 0)
    out = set()
    for trial_id in ids:
        first = _silent_since.setdefault((key, trial_id), now)
        if now - first > grace:
            out.add(trial_id)
    for seen in [k for k in _silent_since if k[0] == key and k[1] not in ids]:
        del _silent_since[seen]
    return out


@contextmanager
def heartbeat(study: optuna.Study, trial_id: int) -> Iterator[None]:
    """Send heartbeats for ``trial_id`` while the block runs (nothing for storages without heartbeats).

    Unlike Optuna's heartbeat thread, which ends at the first failed write, this one keeps trying at
    every interval, so a server restart does not make a live trial look dead.
    """
    storage = storage_of(study)
    if not is_heartbeat_enabled(storage):
        yield
        return
    assert isinstance(storage, BaseHeartbeat)
    interval = storage.get_heartbeat_interval()
    assert interval is not None
    storage.record_heartbeat(trial_id)  # at once: a trial without any heartbeat is never seen as stale
    stop = threading.Event()

    def beat() -> None:
        _no_retry.depth = 1
        while not stop.wait(interval):
            try:
                storage.record_heartbeat(trial_id)
            except Exception as err:  # keep trying; the main thread reports a lasting loss
                log.debug("heartbeat of trial id %s failed: %s", trial_id, type(err).__name__)

    thread = threading.Thread(target=beat, name=f"pdenas-heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
