"""Nothing in a node's data directory is open to the group or to others.

The data directory was 0700, but inside it the database (and its ``-wal`` and
``-shm`` files), the configuration, the TLS certificate, ``documents/`` and
``exports/`` were 0644/0755: a copy of the directory, or a loosened mode on it,
gave them away. Every file is now 0600 and every directory 0700, whatever the
umask, and ``serve`` closes what an earlier version left open. The commands run
as a user runs them: in a subprocess, with the usual umask 022.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import ssl
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import pytest

from schemas.records import NewPupil
from tests.support.sar import unpack
from transfer.node import Node
from transfer.store.permissions import Role
from transfer.transport.http import http_transport

HANDOVER = [sys.executable, "-m", "transfer.cli"]
USUAL_UMASK = 0o022


def _open_entries(root: Path) -> list[str]:
    """Every entry under ``root`` (itself included) with a group or other permission bit."""
    found = []
    for path in [root, *root.rglob("*")]:
        mode = path.lstat().st_mode
        if not stat.S_ISLNK(mode) and mode & 0o077:
            found.append(f"{oct(stat.S_IMODE(mode))} {path.relative_to(root)}")
    return found


@contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    kek = secrets.token_hex(32)
    monkeypatch.setenv("HANDOVER_KEK", kek)
    e = {k: v for k, v in os.environ.items() if not k.startswith("HANDOVER_")}
    e |= {"HANDOVER_KEK": kek, "HOME": str(tmp_path / "home")}
    e["HANDOVER_ADMIN_PASSWORD"] = "a long enough pass phrase 42"
    return e


def _handover(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(
        [*HANDOVER, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        umask=USUAL_UMASK,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def _serving(data: Path, env: dict[str, str]) -> Iterator[str]:
    """``handover serve`` in a subprocess, up and answering; its base URL."""
    port = _free_port()
    proc = subprocess.Popen(
        [*HANDOVER, "serve", "--data-dir", str(data), "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        umask=USUAL_UMASK,
    )
    base = f"https://127.0.0.1:{port}"
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/v1/openapi.json", context=ctx) as r:
                    assert r.status == 200
                break
            except OSError:
                assert proc.poll() is None, proc.communicate()[1]
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.3)
        # A failed sign-in: the server writes to the database and its audit log.
        request = urllib.request.Request(
            f"{base}/api/v1/session",
            data=b'{"org": "123456", "username": "nobody", "password": "not it at all"}',
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(request, context=ctx)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _some_work(data: Path) -> None:
    """A pupil, a document, a subject access export and an audit checkpoint."""
    async with await Node.open(data, transport=http_transport) as node:
        store = node.store
        dsl = await store.actor_for(
            (
                await store.bootstrap_staff(
                    "123456", username="dsl", display_name="D", roles=[Role.DSL]
                )
            ).id
        )
        pupil = await store.create_pupil(
            dsl,
            NewPupil(upn="H801200001001", surname="O", forename="A", dob=date(2014, 1, 1), sex="F"),
        )
        await store.add_document(dsl, pupil.id, _once(b"a scanned letter"), filename="l.pdf")
        await unpack(await store.export_subject_access(dsl, pupil.id))
        await node.audit_log.checkpoint()


def test_a_node_made_worked_on_and_served_is_private_throughout(
    tmp_path: Path, env: dict[str, str]
) -> None:
    data = tmp_path / "node"
    _handover(
        [
            "init",
            "--data-dir",
            str(data),
            "--school",
            "123456:8012000:Hillside",
            "--admin",
            "admin",
        ],
        env,
    )
    assert _open_entries(data) == []
    with _umask(USUAL_UMASK):
        asyncio.run(_some_work(data))
    assert _open_entries(data) == []
    with _serving(data, env):
        # While it runs: the SQLite -wal and -shm files exist, and are the node's alone.
        names = {p.name for p in data.iterdir()}
        assert {"handover.db-wal", "handover.db-shm"} <= names
        assert {"tls", "documents", "audit", "keys"} <= names
        assert _open_entries(data) == []
    assert _open_entries(data) == []
    assert (data / "tls" / "dev-key.pem").exists()


def test_serve_closes_what_an_earlier_version_left_open(
    tmp_path: Path, env: dict[str, str]
) -> None:
    data = tmp_path / "node"
    _handover(["init", "--data-dir", str(data), "--school", "123456:8012000:Hillside"], env)
    with _umask(USUAL_UMASK):
        asyncio.run(_some_work(data))
    # As versions before this one left a data directory: files 0644, folders 0755.
    for path in data.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    assert len(_open_entries(data)) > 5
    with _serving(data, env):
        assert _open_entries(data) == []
