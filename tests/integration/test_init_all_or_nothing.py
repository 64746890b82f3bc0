"""``handover init`` checks every input first, and a failed init leaves nothing behind.

Issue 11, item 14: the administrator's password was refused after the
organisation, its keys and the database were made; running init again then said
the organisation exists.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from keys.keyfiles import KeyFiles
from transfer.commands.init import initialise
from transfer.errors import ConflictError, InputError, TransportError
from transfer.node import Node
from transfer.store.db import make_engine
from transfer.transport.http import http_transport

HANDOVER = [sys.executable, "-m", "transfer.cli"]
GOOD = "a long enough pass phrase 42"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("HANDOVER_")}
    e["HANDOVER_KEK"] = secrets.token_hex(32)
    e["HOME"] = str(tmp_path / "home")
    return e


def _init(data: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HANDOVER, "init", "--data-dir", str(data), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _refused(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode != 0, r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("handover: error: "), r.stderr
    return lines[0]


def test_a_refused_password_leaves_nothing_and_init_then_works(
    tmp_path: Path, env: dict[str, str]
) -> None:
    data = tmp_path / "node"
    school = ["--school", "123456:8012000:Hillside", "--admin", "admin"]
    for weak in ("short", "admin-admin-admin", "password1234"):
        line = _refused(_init(data, {**env, "HANDOVER_ADMIN_PASSWORD": weak}, *school))
        assert "the password is not accepted" in line
        assert not data.exists()
    done = _init(data, {**env, "HANDOVER_ADMIN_PASSWORD": GOOD}, *school)
    assert done.returncode == 0, done.stderr
    assert (
        "school 123456 Hillside" in done.stdout and "administrator 'admin' created" in done.stdout
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--school", "123456:8012000:Hillside", "--school", "12345:8012001:Bad"], "URN"),
        (["--school", "123456:8012000:Hillside", "--school", "123456:8012000:Again"], "twice"),
        (["--agency", "mash-bristol:mash:Bristol MASH"], "agency kind must be one of"),
        (["--school", "123456:8012000: "], "name must be 1 to 200"),
        (["--school", "123456:8012000:Hillside", "--admin", "a" * 101], "username must be 1"),
    ],
)
def test_any_bad_input_is_refused_before_anything_is_made(
    tmp_path: Path, env: dict[str, str], args: list[str], says: str
) -> None:
    data = tmp_path / "node"
    line = _refused(_init(data, {**env, "HANDOVER_ADMIN_PASSWORD": GOOD}, *args))
    assert says in line
    assert not data.exists()


def test_without_a_kek_nothing_is_made(tmp_path: Path, env: dict[str, str]) -> None:
    data = tmp_path / "node"
    no_kek = {k: v for k, v in env.items() if k != "HANDOVER_KEK"}
    line = _refused(_init(data, no_kek, "--school", "123456:8012000:Hillside"))
    assert "no key-encryption key" in line and not data.exists()


def test_a_prepared_directory_is_left_as_it_was(tmp_path: Path, env: dict[str, str]) -> None:
    """A directory the operator made (a mount point, a config written beforehand)."""
    data = tmp_path / "node"
    data.mkdir()
    (data / "handover.toml").write_text("[node]\nname = 'Hillside node'\n", encoding="utf-8")
    (data / "tls").mkdir()
    before = sorted(p.name for p in data.iterdir())
    env["HANDOVER_ADMIN_PASSWORD"] = "short"
    _refused(_init(data, env, "--school", "123456:8012000:Hillside", "--admin", "admin"))
    assert sorted(p.name for p in data.iterdir()) == before


def test_adding_to_a_node_refuses_a_clash_before_making_the_others(
    tmp_path: Path, env: dict[str, str]
) -> None:
    data = tmp_path / "node"
    assert _init(data, env, "--school", "123456:8012000:Hillside").returncode == 0
    line = _refused(
        _init(data, env, "--school", "234567:8012001:Riverside", "--school", "123456:8012000:X")
    )
    assert line.startswith("handover: error: organisation '123456' already exists")
    assert "nothing was created" in line
    assert not (data / "keys" / "234567.json").exists()
    again = _init(data, env, "--school", "234567:8012001:Riverside")
    assert again.returncode == 0, again.stderr


# -------------------------------------------- a failure while creating (both engines)


def _sqlite_file_exists(url: str) -> bool:
    return Path(url.split("///", 1)[1]).exists()


async def _tables(url: str) -> list[str]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return list(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def test_a_failure_part_way_takes_away_everything_it_made(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills while the second organisation's keys are written: nothing is left."""
    monkeypatch.setenv("HANDOVER_KEK", secrets.token_hex(32))
    monkeypatch.setenv("HANDOVER_DATABASE__URL", db_url)
    data = tmp_path / "node"
    made: list[str] = []
    real_create = KeyFiles.create

    async def create(self: KeyFiles, org_id: str, *, actor: str | None = None) -> object:
        if made:
            raise TransportError("No space left on device")
        made.append(org_id)
        return await real_create(self, org_id, actor=actor)

    monkeypatch.setattr(KeyFiles, "create", create)
    schools = [("123456", "8012000", "Hillside"), ("234567", "8012001", "Riverside")]
    with pytest.raises(TransportError, match="No space left"):
        await initialise(
            data, name="t", schools=schools, agencies=[], admin="admin", admin_password=GOOD
        )
    assert made == ["123456"]  # the first organisation was made in full, then undone
    assert not data.exists()
    if db_url.startswith("sqlite"):
        assert not _sqlite_file_exists(db_url)
    else:
        assert await _tables(db_url) == []
    monkeypatch.setattr(KeyFiles, "create", real_create)
    lines = await initialise(
        data, name="t", schools=schools, agencies=[], admin="admin", admin_password=GOOD
    )
    assert sum(line.startswith("school ") for line in lines) == 2
    async with await Node.open(data, transport=http_transport) as node:
        assert [o.id for o in await node.store.list_organisations()] == ["123456", "234567"]


async def test_adding_to_a_node_checks_the_password_first(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HANDOVER_KEK", secrets.token_hex(32))
    monkeypatch.setenv("HANDOVER_DATABASE__URL", db_url)
    data = tmp_path / "node"
    await initialise(
        data,
        name="t",
        schools=[("123456", "8012000", "Hillside")],
        agencies=[],
        admin=None,
        admin_password=None,
    )
    with pytest.raises(InputError, match="password is not accepted"):
        await initialise(
            data,
            name="t",
            schools=[("234567", "8012001", "Riverside")],
            agencies=[],
            admin="admin",
            admin_password="short",
        )
    with pytest.raises(ConflictError):
        await initialise(
            data,
            name="t",
            schools=[("234567", "8012001", "R"), ("123456", "8012000", "H")],
            agencies=[],
            admin=None,
            admin_password=None,
        )
    async with await Node.open(data, transport=http_transport) as node:
        assert [o.id for o in await node.store.list_organisations()] == ["123456"]
    assert data.exists() and (data / "keys" / "123456.json").exists()
