"""A node whose stored state is damaged or not its own: every command and ``serve`` say so.

Issue 17, items 7 and 8, on real files: a truncated or bit-flipped SQLite file
gave raw tracebacks (``sqlalchemy.exc.DatabaseError``, a ``UnicodeDecodeError``
at the first statement); an empty database made ``serve`` start a blank new node;
another node's database or a wrong KEK let it start. Each command here runs as
the operator runs it, in its own process; ``serve`` is the real command.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.postgres import PostgresServer, create_database

HANDOVER = [sys.executable, "-m", "transfer.cli"]
ORG = "123456"
RESTORE = "restore the database from your last backup (docs/operations.md, 'Backup and restore')"


def _env(kek: str, home: Path, db_url: str = "") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDOVER_")}
    env["HANDOVER_KEK"] = kek
    env["HOME"] = str(home)
    if db_url:
        env["HANDOVER_DATABASE__URL"] = db_url
    return env


def _run(
    args: list[str], env: dict[str, str], timeout: int = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HANDOVER, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _init(data: Path, env: dict[str, str], urn: str = ORG, laestab: str = "8012000") -> None:
    r = _run(["init", "--data-dir", str(data), "--school", f"{urn}:{laestab}:Hillside"], env)
    assert r.returncode == 0, r.stderr


def _one_line(r: subprocess.CompletedProcess[str]) -> str:
    """The command failed with exactly one line on standard error, and no traceback."""
    assert r.returncode != 0, r.stdout
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("handover: error: "), lines[0]
    return lines[0]


def _serve(data: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``handover serve`` as an operator starts it; it must stop by itself, refusing."""
    return _run(["serve", "--data-dir", str(data), "--port", "0"], env, timeout=60)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One node made by ``handover init`` (SQLite), copied by each test that damages it."""
    root = tmp_path_factory.mktemp("template")
    kek = secrets.token_hex(32)
    _init(root / "node", _env(kek, root))
    return root / "node", kek


# ------------------------------------------------------------- damaged files (item 7)


def truncated(raw: bytes) -> bytes:
    return raw[: len(raw) // 2]


def header_flipped(raw: bytes) -> bytes:
    out = bytearray(raw)
    out[0] ^= 0x20  # "SQLite format 3" -> "sQLite format 3": not a database
    out[7] ^= 0x01
    return bytes(out)


def schema_name_flipped(raw: bytes) -> bytes:
    """A table's name in the schema made invalid UTF-8 (SQLite's own message then is too)."""
    out = bytearray(raw)
    at = out.find(b"alerts", 100)
    assert at > 0
    out[at] = 0xFF
    return bytes(out)


def pages_overwritten(raw: bytes) -> bytes:
    """Every page but the first (the schema) overwritten: any table read fails."""
    return raw[:4096] + bytes([0xA5]) * (len(raw) - 4096)


DAMAGES: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "truncated": (truncated, "database disk image is malformed"),
    "header": (header_flipped, "file is not a database"),
    "schema": (schema_name_flipped, "it holds bytes that are not text"),
    "pages": (pages_overwritten, "database disk image is malformed"),
}

#: One command for each way a command opens the database (the node, the audit log alone,
#: the key files with its audit log), then ``serve``.
COMMANDS = [
    ["alerts", "list", "--org", ORG, "--as", "admin"],
    ["retention", "run"],
    ["audit", "verify"],
    ["keys", "rotate", ORG],
    ["serve", "--port", "0"],
]


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_every_command_and_serve_name_a_damaged_database(
    template: tuple[Path, str], tmp_path: Path, damage: str
) -> None:
    source, kek = template
    data = tmp_path / "node"
    shutil.copytree(source, data)
    db = data / "handover.db"
    how, reason = DAMAGES[damage]
    db.write_bytes(how(db.read_bytes()))
    damaged = db.read_bytes()
    env = _env(kek, tmp_path)
    for args in COMMANDS:
        r = _run([*args, "--data-dir", str(data)], env, timeout=60)
        line = _one_line(r)
        assert r.returncode == 7, (args, line)
        assert f"the database {db} is damaged ({reason}" in line, (args, line)
        assert RESTORE in line, line
    assert db.read_bytes() == damaged  # nothing was written over it


def test_serve_reads_the_whole_file_before_it_starts(
    template: tuple[Path, str], tmp_path: Path
) -> None:
    """A damaged page that opening the node never reads: serve finds it before it starts."""
    source, kek = template
    data = tmp_path / "node"
    shutil.copytree(source, data)
    db = data / "handover.db"
    # The root page of a table nothing reads while a node opens (which page that is
    # depends on the schema, so it is looked up rather than assumed).
    with contextlib.closing(sqlite3.connect(db)) as conn:
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
        (root,) = conn.execute(
            "SELECT rootpage FROM sqlite_schema WHERE name = 'tombstones'"
        ).fetchone()
    raw = bytearray(db.read_bytes())
    start = (root - 1) * page_size
    raw[start : start + page_size] = bytes([0xAA]) * page_size
    db.write_bytes(bytes(raw))
    env = _env(kek, tmp_path)
    # Opening the node does not read that page: a command that only opens it works...
    opened = _run(["audit", "verify", "--data-dir", str(data)], env)
    assert opened.returncode == 0, opened.stderr
    # ...but serve reads the whole file first, and refuses before it starts.
    line = _one_line(_serve(data, env))
    assert f"the database {db} is damaged (" in line and RESTORE in line


# ----------------------------------------- empty, missing, mismatched, wrong KEK (item 8)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _database(engine: str, request: pytest.FixtureRequest, tmp_path: Path, name: str) -> str:
    """A new, empty database: a SQLite file's URL (not yet created) or a PostgreSQL one."""
    if engine == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / name / 'handover.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return create_database(server, f"{name}{uuid.uuid4().hex[:8]}")


def test_serve_refuses_a_wrong_kek_and_another_nodes_database(
    engine: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    kek = secrets.token_hex(32)
    ours, theirs = (
        _database(engine, request, tmp_path, "a"),
        _database(engine, request, tmp_path, "b"),
    )
    data, other = tmp_path / "node", tmp_path / "other"
    _init(data, _env(kek, tmp_path, ours))
    _init(other, _env(kek, tmp_path, theirs), urn="234567", laestab="8012001")

    line = _one_line(_serve(data, _env(secrets.token_hex(32), tmp_path, ours)))
    assert "the key-encryption key from HANDOVER_KEK is not this node's key" in line
    line = _one_line(
        _run(
            ["alerts", "list", "--org", ORG, "--as", "admin", "--data-dir", str(data)],
            _env(secrets.token_hex(32), tmp_path, ours),
        )
    )
    assert "is not this node's key" in line

    # The same KEK, but the other node's database: refused, named.
    line = _one_line(_serve(data, _env(kek, tmp_path, theirs)))
    assert "belongs to another node" in line and str(data) in line
    # Both still work with their own database and KEK.
    for d, url in ((data, ours), (other, theirs)):
        r = _run(["retention", "run", "--data-dir", str(d)], _env(kek, tmp_path, url))
        assert r.returncode == 0, r.stderr


def test_serve_refuses_an_empty_or_missing_database_and_leaves_it_so(
    engine: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    import asyncio

    kek = secrets.token_hex(32)
    url = _database(engine, request, tmp_path, "a")
    data = tmp_path / "node"
    _init(data, _env(kek, tmp_path, url))
    # A new, empty database where the node's was: serve starts no blank node on it.
    empty = _database(engine, request, tmp_path, "empty")
    if engine == "sqlite":
        Path(empty.split("///", 1)[1]).parent.mkdir()
        Path(empty.split("///", 1)[1]).write_bytes(b"")
    line = _one_line(_serve(data, _env(kek, tmp_path, empty)))
    assert ("is empty (0 bytes)" if engine == "sqlite" else "holds no Handover data") in line
    assert str(data) in line and RESTORE in line
    if engine == "postgres":
        assert asyncio.run(_tables(empty)) == []  # nothing was created in it
    else:
        assert Path(empty.split("///", 1)[1]).stat().st_size == 0
        # A database file that is gone: refused, and not created.
        gone = tmp_path / "gone" / "handover.db"
        line = _one_line(_serve(data, _env(kek, tmp_path, f"sqlite+aiosqlite:///{gone}")))
        assert f"the database {gone} is missing" in line
        assert not gone.exists()
        # The default database in the data directory, emptied to 0 bytes.
        own = data / "handover.db"
        shutil.copy(Path(url.split("///", 1)[1]), own)
        own.write_bytes(b"")
        line = _one_line(_serve(data, _env(kek, tmp_path)))
        assert f"the database {own} is empty (0 bytes)" in line
        assert own.stat().st_size == 0


async def _tables(url: str) -> list[str]:
    import sqlalchemy as sa

    from transfer.store.db import make_engine

    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return list(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))
    finally:
        await engine.dispose()
