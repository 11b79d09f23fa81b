"""The study-folder lock (filelock): exclusive, never waits, names its holder, freed when the holder dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pdenas.search import StudyError
from pdenas.search._study import DirectoryLock

_HOLD = """
import sys
from pathlib import Path
from pdenas.search._study import DirectoryLock
with DirectoryLock(Path(sys.argv[1])):
    print("held", flush=True)
    sys.stdin.readline()
"""


@pytest.fixture
def holder(tmp_path: Path):
    """A separate process holding the lock of ``tmp_path / 'study'`` until its stdin closes."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(tmp_path / "study")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )
    assert proc.stdout.readline().strip() == "held"
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def _enter(lock: DirectoryLock) -> BaseException | None:
    """Take ``lock`` in a thread; fail the test if that waits (a blocking lock would hang here)."""
    outcome: list[BaseException | None] = []

    def take() -> None:
        try:
            lock.__enter__()
            outcome.append(None)
        except BaseException as err:  # noqa: BLE001
            outcome.append(err)

    thread = threading.Thread(target=take, daemon=True)
    thread.start()
    thread.join(timeout=20)
    assert outcome, "taking a held DirectoryLock waited instead of failing at once"
    return outcome[0]


def test_a_second_holder_is_refused_at_once_with_one_line_naming_the_first(holder, tmp_path: Path) -> None:
    err = _enter(DirectoryLock(tmp_path / "study"))
    assert isinstance(err, StudyError)
    assert str(err) == (
        f"{tmp_path / 'study'} is in use by a running pdenas search (pid {holder.pid} on {os.uname().nodename}): "
        "wait for it, stop it, or add workers to it with --workers"
    )


def test_the_lock_is_freed_when_its_holder_is_killed(holder, tmp_path: Path) -> None:
    holder.send_signal(signal.SIGKILL)  # no __exit__: the OS releases the file lock
    holder.wait()
    lock = DirectoryLock(tmp_path / "study")
    assert _enter(lock) is None
    assert (tmp_path / "study" / ".lock.holder").read_text() == f"pid {os.getpid()} on {os.uname().nodename}"
    lock.__exit__(None, None, None)


def test_released_on_exit_and_taken_again(tmp_path: Path) -> None:
    with DirectoryLock(tmp_path / "study"):
        assert isinstance(_enter(DirectoryLock(tmp_path / "study")), StudyError)  # exclusive within a process too
    assert not (tmp_path / "study" / ".lock.holder").exists()
    with DirectoryLock(tmp_path / "study"):
        pass


def test_holder_unknown_is_said_so(tmp_path: Path) -> None:
    with DirectoryLock(tmp_path / "study"):
        (tmp_path / "study" / ".lock.holder").unlink()
        err = _enter(DirectoryLock(tmp_path / "study"))
    assert "in use by a running pdenas search (another process)" in str(err)
