"""Running ``pdenas`` as a user does: a real process, its output redirected (as CI and scripts run it) or
in a pseudo-terminal (as a person at a terminal runs it, where the live display is used)."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time

__all__ = ["pdenas_cmd", "run_pdenas", "run_pdenas_in_terminal", "strip_ansi"]

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[()][A-Z0-9]|\r")


def pdenas_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "pdenas.cli", *args]


def _env(extra: dict | None) -> dict:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", **(extra or {})}
    for name in ("NO_COLOR", "TERM_PROGRAM", "COLUMNS", "LINES"):  # rich decides from the terminal alone
        env.pop(name, None)
    return env


def run_pdenas(*args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """``pdenas ARGS`` with stdout and stderr captured (not a terminal)."""
    return subprocess.run(pdenas_cmd(*args), capture_output=True, text=True, timeout=timeout, env=_env(env))


def strip_ansi(text: str) -> str:
    """``text`` without terminal escape sequences (colours, cursor moves) and carriage returns."""
    return _ANSI.sub("", text)


def run_pdenas_in_terminal(
    *args: str, timeout: float = 600, env: dict | None = None, columns: int = 120
) -> subprocess.CompletedProcess:
    """``pdenas ARGS`` on a pseudo-terminal (stdin, stdout and stderr a TTY of ``columns`` columns); the
    output is everything the terminal showed, escape sequences removed (``stdout``; ``stderr`` is empty)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    proc = subprocess.Popen(pdenas_cmd(*args), stdin=slave, stdout=slave, stderr=slave, env={**_env(env), "TERM": "xterm-256color"},
                            close_fds=True, start_new_session=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            if time.monotonic() > deadline:
                proc.kill()
                raise subprocess.TimeoutExpired(pdenas_cmd(*args), timeout, output=b"".join(chunks))
            ready, _, _ = select.select([master], [], [], 0.2)
            if not ready:
                if proc.poll() is not None and not select.select([master], [], [], 0)[0]:
                    break
                continue
            try:
                data = os.read(master, 1 << 16)
            except OSError:  # EIO: the process and every holder of the terminal are gone
                break
            if not data:
                break
            chunks.append(data)
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    output = strip_ansi(b"".join(chunks).decode("utf-8", "replace"))
    return subprocess.CompletedProcess(proc.args, proc.returncode, output, "")
