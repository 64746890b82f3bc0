"""Start a real, throw-away PostgreSQL server for the tests.

Uses the machine's PostgreSQL binaries (``pg_config --bindir`` or
``/usr/lib/postgresql/*/bin``), runs them as a non-root user (``postgres``
when we are root), in a temporary directory, on a free loopback port, and
stops the server afterwards.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    datadir: Path

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://{self.user}@{self.host}:{self.port}/{database}"


def _bindir() -> Path:
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        cand = Path(out.stdout.strip())
        if (cand / "initdb").exists():
            return cand
    for cand_s in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(cand_s, "initdb").exists():
            return Path(cand_s)
    raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) not found")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_user(user: str | None, cmd: list[str]) -> list[str]:
    if user is None:
        return cmd
    return ["runuser", "-u", user, "--", *cmd]


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    bindir = _bindir()
    run_as: str | None = None
    if os.geteuid() == 0:
        run_as = "postgres"
        pwd.getpwnam(run_as)  # raises KeyError with a clear name if absent
    db_user = run_as or pwd.getpwuid(os.geteuid()).pw_name
    tmp = Path(tempfile.mkdtemp(prefix="handover-pg-"))
    datadir = tmp / "data"
    if run_as:
        shutil.chown(tmp, user=run_as)
    port = _free_port()
    env = {**os.environ, "LC_ALL": "C.UTF-8"}
    subprocess.run(
        _as_user(
            run_as,
            [
                str(bindir / "initdb"),
                "-D",
                str(datadir),
                "-U",
                db_user,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        ),
        check=True,
        capture_output=True,
        env=env,
    )
    opts = f"-h 127.0.0.1 -p {port} -k {tmp} -c fsync=off -c max_connections=200"
    subprocess.run(
        _as_user(
            run_as,
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(datadir),
                "-o",
                opts,
                "-l",
                str(tmp / "log"),
                "-w",
                "start",
            ],
        ),
        check=True,
        capture_output=True,
        env=env,
    )
    try:
        yield PostgresServer("127.0.0.1", port, db_user, datadir)
    finally:
        subprocess.run(
            _as_user(
                run_as,
                [str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "immediate", "-w", "stop"],
            ),
            check=False,
            capture_output=True,
            env=env,
        )
        shutil.rmtree(tmp, ignore_errors=True)


def create_database(server: PostgresServer, name: str) -> str:
    """Create an empty database and return its SQLAlchemy URL."""
    psql = _bindir() / "psql"
    subprocess.run(
        [
            str(psql),
            "-h",
            server.host,
            "-p",
            str(server.port),
            "-U",
            server.user,
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            f'CREATE DATABASE "{name}"',
        ],
        check=True,
        capture_output=True,
    )
    return server.url(name)
