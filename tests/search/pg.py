"""A real PostgreSQL server for the tests: ``initdb`` into a temporary folder, ``pg_ctl start`` on a
free loopback port, databases created on demand, everything stopped and removed afterwards.

Uses Debian's ``postgresql`` package (``.ci/run`` installs it when missing): the binaries are found on
PATH or in /usr/lib/postgresql/<version>/bin. The server refuses to run as root, so as root it runs as
the ``postgres`` user the package creates. Tests using it skip, saying why, only where the binaries are
absent (where ``.ci/run`` has installed them, PDENAS_REQUIRE_POSTGRES turns any other reason not to run
into a failure).
"""

from __future__ import annotations

import glob
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

__all__ = ["PostgresServer", "find_bindir", "postgres_server"]

MISSING = (
    "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in /usr/lib/postgresql/*/bin: "
    "install Debian's postgresql package (.ci/run does) to run the shared-storage tests"
)


def unavailable(reason: str) -> None:
    """Skip, saying why; or fail, where CI has installed the server (.ci/run sets PDENAS_REQUIRE_POSTGRES)."""
    if os.environ.get("PDENAS_REQUIRE_POSTGRES"):
        pytest.fail(f"PDENAS_REQUIRE_POSTGRES is set but {reason}")
    pytest.skip(reason)


def find_bindir() -> Path | None:
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """One throwaway server; ``url(db)`` gives an Optuna/SQLAlchemy URL for a database on it."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="pdenas-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sock"
        self.log = self.root / "server.log"
        self.port = _free_port()
        self._run_as: list[str] = []
        if os.geteuid() == 0:  # postgres will not run as root
            import pwd

            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                unavailable("running as root and there is no 'postgres' user to run the PostgreSQL server as")
            runuser = shutil.which("runuser")
            self._run_as = [runuser, "-u", "postgres", "--"] if runuser else ["su", "postgres", "-s", "/bin/sh", "-c"]
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self.sockets.mkdir()
        if os.geteuid() == 0:
            os.chown(self.sockets, user.pw_uid, user.pw_gid)
        self._cmd("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
        self.start()

    def _cmd(self, tool: str, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        argv = [str(self.bindir / tool), *args]
        if self._run_as and self._run_as[0] == "su":
            argv = [*self._run_as, shlex.join(argv)]
        else:
            argv = [*self._run_as, *argv]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=self.root)
        if check and proc.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{tool} {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()} {log}")
        return proc

    def start(self) -> None:
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.sockets} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._cmd("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        self._cmd("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop", check=False)

    def restart(self, down_for: float = 0.0) -> None:
        self.stop()
        time.sleep(down_for)
        self.start()

    def url(self, database: str, *, password: str | None = None) -> str:
        auth = f"postgres:{password}" if password else "postgres"
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def close(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server():
    bindir = find_bindir()
    if bindir is None:
        unavailable(MISSING)
    try:
        import psycopg  # noqa: F401
    except ImportError:
        unavailable("psycopg is not installed: pip install -e '.[postgres]'")
    server = PostgresServer(bindir)
    try:
        yield server
    finally:
        server.close()
