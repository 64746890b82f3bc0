"""The backup and restore commands of ``docs/operations.md``, run as written, on both engines.

Each script is taken verbatim from the page ("Backup and restore"), so the
documented commands are the tested ones. A node is made by ``handover init``,
backed up while it runs, damaged (issue 17, item 7), restored, and opened again.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.postgres import PostgresServer, _bindir, create_database

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
ORG = "123456"
BIN = Path(sys.executable).parent


def documented(name: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    m = re.search(rf"<!-- {name} -->\n```bash\n(.*?)\n```", text, re.S)
    assert m, f"docs/operations.md has lost its {name} script"
    return m.group(1)


@pytest.fixture(scope="module", autouse=True)
def _need_tools() -> None:
    missing = [t for t in ("sqlite3", "tar", "bash") if shutil.which(t) is None]
    if missing:
        pytest.fail(f"missing standard tools {missing}: run `make tools`")


def _env(tmp_path: Path, kek: str, db_url: str = "") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDOVER_")}
    env["PATH"] = f"{BIN}:{env.get('PATH', '/usr/bin:/bin')}"
    env["HANDOVER_KEK"] = kek
    env["HOME"] = str(tmp_path / "home")
    env["LC_ALL"] = "C"
    if db_url:
        env["HANDOVER_DATABASE__URL"] = db_url
    return env


def _handover(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "transfer.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _script(name: str, env: dict[str, str], **values: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", documented(name)],
        env={**env, **values},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _node(data: Path, env: dict[str, str]) -> None:
    made = _handover(
        {**env, "HANDOVER_ADMIN_PASSWORD": "a long enough pass phrase 42"},
        "init",
        "--data-dir",
        str(data),
        "--school",
        f"{ORG}:8012000:Hillside",
        "--admin",
        "admin",
    )
    assert made.returncode == 0, made.stderr


def _after_the_backup(data: Path, env: dict[str, str]) -> None:
    """Work done after the backup: audited, and a newer checkpoint file written."""
    for args in (["keys", "rotate", ORG], ["audit", "checkpoint"]):
        r = _handover(env, *args, "--data-dir", str(data))
        assert r.returncode == 0, r.stderr


def _opens(data: Path, env: dict[str, str]) -> None:
    listed = _handover(env, "account", "list", "--org", ORG, "--data-dir", str(data))
    assert listed.returncode == 0, listed.stderr
    assert "admin" in listed.stdout


def _serving(data: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """``handover serve``, once it has opened the node and listens."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "transfer.cli", "serve", "--data-dir", str(data), "--port", "0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if "serving" in line:
            return proc
        if not line and proc.poll() is not None:
            break
    proc.kill()
    pytest.fail(f"serve did not start: {proc.stderr.read()}")


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.wait(timeout=60)


def test_sqlite_backup_while_serving_then_restore_after_damage(tmp_path: Path) -> None:
    kek = secrets.token_hex(32)
    env = _env(tmp_path, kek)
    data, backup = tmp_path / "srv" / "handover", tmp_path / "backup" / "monday"
    _node(data, env)
    serve = _serving(data, env)
    try:
        made = _script("backup-sqlite", env, DATA=str(data), BACKUP=str(backup))
        assert made.returncode == 0, made.stderr
    finally:
        _stop(serve)
    assert (backup / "handover.db").stat().st_size > 0
    _after_the_backup(data, env)

    # The database is damaged (truncated): every command says so, and where.
    db = data / "handover.db"
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 3])
    broken = _handover(env, "account", "list", "--org", ORG, "--data-dir", str(data))
    assert broken.returncode == 7 and f"the database {db} is damaged" in broken.stderr
    damaged = db.read_bytes()

    restored = _script("restore-sqlite", env, DATA=str(data), BACKUP=str(backup))
    assert restored.returncode == 0, restored.stderr
    # The restore shows in the audit log: rolled back against the newer checkpoint file.
    assert "rolled back" in restored.stderr + restored.stdout
    assert "keep the report above" in restored.stdout
    _opens(data, env)
    [kept] = list(data.parent.glob("handover.damaged-*"))
    assert (kept / "handover.db").read_bytes() == damaged

    # The whole data directory lost: the files and then the database, into a new directory.
    again = tmp_path / "new-disk" / "handover"
    again.parent.mkdir()
    files = _script("restore-files", env, DATA=str(again), BACKUP=str(backup))
    assert files.returncode == 0, files.stderr
    assert not (again / "handover.db").exists() and (again / "node-identity").exists()
    line = _handover(env, "account", "list", "--org", ORG, "--data-dir", str(again)).stderr
    assert f"the database {again / 'handover.db'} is missing" in line
    restored = _script("restore-sqlite", env, DATA=str(again), BACKUP=str(backup))
    assert restored.returncode == 0, restored.stderr
    _opens(again, env)


@pytest.mark.postgres
def test_postgresql_backup_while_serving_then_restore_after_loss(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    kek = secrets.token_hex(32)
    url = create_database(postgres_server, f"br{secrets.token_hex(4)}")
    env = _env(tmp_path, kek, url)
    env["PATH"] = f"{_bindir()}:{env['PATH']}"
    pgurl = url.replace("postgresql+asyncpg://", "postgresql://")
    data, backup = tmp_path / "srv" / "handover", tmp_path / "backup" / "monday"
    _node(data, env)
    serve = _serving(data, env)
    try:
        made = _script("backup-postgresql", env, DATA=str(data), BACKUP=str(backup), PGURL=pgurl)
        assert made.returncode == 0, made.stderr
    finally:
        _stop(serve)
    _after_the_backup(data, env)

    # The database's contents are lost (emptied): the node refuses to start a blank one.
    psql = [str(_bindir() / "psql"), pgurl, "-v", "ON_ERROR_STOP=1", "-q", "-c"]
    subprocess.run(
        [*psql, "DROP SCHEMA public CASCADE; CREATE SCHEMA public"], check=True, capture_output=True
    )
    lost = _handover(env, "serve", "--data-dir", str(data), "--port", "0")
    assert lost.returncode == 7 and "holds no Handover data" in lost.stderr

    restored = _script("restore-postgresql", env, DATA=str(data), BACKUP=str(backup), PGURL=pgurl)
    assert restored.returncode == 0, restored.stderr
    assert "rolled back" in restored.stderr + restored.stdout
    _opens(data, env)
