"""A served SQLite node on a small file system that fills up (issue 17, item 6).

The node runs in its own user and mount namespaces (``unshare --user --map-root-user
--mount``: no root needed) on a 48 MiB tmpfs it mounts there; the test fills that file
system through ``/proc/PID/root`` until the kernel says ``ENOSPC``. SQLite then reports
"database or disk is full" (``SQLITE_FULL``) as on any full disk. The staff API, the
peer protocol and the web app answer 503 ``out-of-space``, each failure is one log line
with no traceback, and once the filler is removed the node carries on and the DSL team
is alerted.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.cookiejar import CookieJar
from pathlib import Path

import pytest

ORG = "123456"
PASSWORD = "a long enough pass phrase 42"
_CSRF = re.compile(r'<input type="hidden" name="csrf" value="([^"]*)"')

_SCRIPT = """
set -e
mount -t tmpfs -o size=48m,mode=0700 tmpfs "$MNT"
"$PY" -m transfer.cli init --data-dir "$DATA" --school "$ORG:8012000:Hillside" --admin admin \
    >/dev/null
echo "node made" >&2
exec "$PY" -m transfer.cli serve --data-dir "$DATA" --port "$PORT"
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Log:
    """The served node's standard error, read as it comes."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._proc = proc
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc.stderr is not None
        for line in self._proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return
            if self._proc.poll() is not None:
                time.sleep(0.2)
                pytest.fail(f"the node stopped: {self.lines[-20:]}")
            time.sleep(0.05)
        pytest.fail(f"no {text!r} in the node's log: {self.lines[-20:]}")

    def text(self) -> str:
        return "\n".join(self.lines)


@contextlib.contextmanager
def _node_on_small_disk(
    tmp_path: Path,
) -> Iterator[tuple[subprocess.Popen[str], _Log, Path, Path, str]]:
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        pytest.fail("util-linux's unshare and nsenter are needed (Debian: util-linux)")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDOVER_")}
    env.update(
        MNT=str(mnt),
        DATA=str(mnt / "handover"),
        PY=sys.executable,
        ORG=ORG,
        PORT=str(port),
        HANDOVER_KEK=secrets.token_hex(32),
        HANDOVER_ADMIN_PASSWORD=PASSWORD,
        HANDOVER_TRANSFER__SWEEP_SECONDS="1",
        HOME=str(tmp_path / "home"),
        LC_ALL="C",
    )
    proc = subprocess.Popen(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", _SCRIPT],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    log = _Log(proc)
    try:
        log.wait_for("serving ")
        # The node's data directory, seen from outside its mount namespace.
        data = Path(f"/proc/{proc.pid}/root") / mnt.relative_to("/") / "handover"
        yield proc, log, mnt / "handover", data, f"https://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


_CHECKPOINT = (
    "import sqlite3, sys\n"
    "db = sqlite3.connect(sys.argv[1], timeout=30)\n"
    "db.execute('PRAGMA wal_checkpoint(TRUNCATE)')\n"
    "db.close()\n"
)


def _fill(pid: int, inside: Path, data: Path) -> Path:
    """Fill the node's file system to the last byte; the filler file (remove it to free).

    ``inside``: the data directory as the node sees it; ``data``: as this process does.
    """
    # First an empty WAL, so the next write SQLite makes needs new room (a WAL reused from
    # its start would overwrite space it already holds). SQLite resolves /proc/PID/root, so
    # this runs in the node's namespaces.
    done = subprocess.run(
        [
            "nsenter",
            "--target",
            str(pid),
            "--user",
            "--mount",
            "--",
            sys.executable,
            "-c",
            _CHECKPOINT,
            str(inside / "handover.db"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    filler = data / "filler"
    piece = b"\0" * (1024 * 1024)
    with filler.open("wb", buffering=0) as fh:
        while True:
            try:
                fh.write(piece)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                if len(piece) == 1:
                    break
                piece = piece[: len(piece) // 2]
    return filler


class _Client:
    def __init__(self, base: str, cafile: Path) -> None:
        self.base = base
        ctx = ssl.create_default_context(cafile=str(cafile))
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=ctx),
            urllib.request.HTTPCookieProcessor(CookieJar()),
        )

    def call(
        self, method: str, path: str, body: bytes = b"", content_type: str = "application/json"
    ) -> tuple[int, str, str]:
        req = urllib.request.Request(self.base + path, data=body or None, method=method)
        if body:
            req.add_header("Content-Type", content_type)
        try:
            with self.opener.open(req, timeout=60) as r:
                return r.status, r.headers.get("Content-Type", ""), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.headers.get("Content-Type", ""), e.read().decode()


def test_a_node_whose_disk_fills_answers_503_on_every_face_and_carries_on(
    tmp_path: Path,
) -> None:
    with _node_on_small_disk(tmp_path) as (proc, log, inside, data, base):
        client = _Client(base, data / "tls" / "dev-cert.pem")
        _, _, form = client.call("GET", "/sign-in")
        csrf = _CSRF.search(form)
        assert csrf, form[:500]
        wrong = f'{{"org": "{ORG}", "username": "admin", "password": "wrong"}}'.encode()
        sign_in = urllib.parse.urlencode(
            {
                "csrf": csrf.group(1),
                "org": ORG,
                "username": "admin",
                "password": "wrong",
                "code": "",
            }
        ).encode()
        time.sleep(1.5)  # the start-up sweeps have run
        filler = _fill(proc.pid, inside, data)
        before = len(log.lines)

        api = client.call("POST", "/api/v1/session", wrong)
        peer = client.call("POST", "/peer/v1/packages", b"{}")
        page = client.call("POST", "/sign-in", sign_in, "application/x-www-form-urlencoded")

        for status, ctype, body in (api, peer):
            assert status == 503, body
            assert ctype.startswith("application/problem+json"), body
            assert '"type": "urn:handover:problem:out-of-space"' in body.replace('":"', '": "')
            assert "this node is out of storage space (the database " in body
        assert page[0] == 503, page[2][:2000]
        assert "The server has run out of storage space" in page[2]

        time.sleep(0.5)
        during = log.lines[before:]
        # One line per refused request (scheduled jobs that met the full disk say so on one
        # line each too: "Job ... failed: this node is out of storage space ...").
        refused = [line for line in during if "ERROR handover.space: " in line]
        assert all("failed: this node is out of storage space" in line for line in refused)
        assert [line.split(" failed:")[0].rsplit(": ", 1)[-1] for line in refused] == [
            "POST /api/v1/session",
            "POST /peer/v1/packages",
            "POST /sign-in",
        ], during
        assert "Traceback" not in "\n".join(during)

        # Space freed: the node carries on by itself, and the DSL team is told.
        filler.unlink()
        status, _, body = client.call("POST", "/api/v1/session", wrong)
        assert status == 401, body
        log.wait_for(f"for {ORG} [node-out-of-space]: The Handover server ran out of storage")
        assert "Traceback" not in log.text()
