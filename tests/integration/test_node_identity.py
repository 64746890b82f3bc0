"""The node's identity: its database and KEK are checked at every open (both engines).

Issue 11, item 13: with a random ``HANDOVER_KEK``, read commands ran and showed
pupils' names. Now a check value sealed under the KEK at ``init`` is opened at
every open, and nodes set up before it existed are given one the first time the
KEK opens something sealed before (:mod:`transfer.identity`).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from schemas.auditing import MemoryAudit
from schemas.records import NewPupil
from transfer.commands.init import initialise
from transfer.errors import DamagedStateError
from transfer.identity import MARKER, WrongKekError, check_identity, read_marker
from transfer.identity.tables import IDENTITY_TABLES
from transfer.node import Node
from transfer.store.db import Base, make_engine, migrate
from transfer.store.permissions import Role
from transfer.store.service import Store
from transfer.transport.http import http_transport

KEK = secrets.token_bytes(32)


@pytest.fixture
def node_env(db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("HANDOVER_KEK", KEK.hex())
    monkeypatch.setenv("HANDOVER_DATABASE__URL", db_url)
    return db_url


async def _rows(url: str) -> list[Any]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            has = await conn.run_sync(lambda c: sa.inspect(c).has_table("node_identity"))
            if not has:
                return []
            return list(await conn.execute(sa.text("SELECT node_id FROM node_identity")))
    finally:
        await engine.dispose()


async def _old_node(url: str, data_dir: Path) -> str:
    """A node as ``init`` made it before identities: a school, a DSL, a pupil; no identity."""
    audit = MemoryAudit()
    os.makedirs(data_dir)
    async with await Store.open(url, KEK, audit, data_dir=data_dir) as store:
        await store.create_school(name="Hillside", urn="123456", laestab="8012000")
        staff = await store.bootstrap_staff(
            "123456", username="dsl", display_name="Dee", roles=[Role.DSL]
        )
        dsl = await store.actor_for(staff.id)
        pupil = await store.create_pupil(
            dsl,
            NewPupil(
                upn="H801200001001",
                surname="Okafor",
                forename="Amara",
                dob=date(2014, 11, 3),
                sex="F",
            ),
        )
    # Its tables as that version left them: no node_identity yet.
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text("DROP TABLE node_identity"))
            await conn.execute(
                sa.text("DELETE FROM alembic_version WHERE version_num = :v"), {"v": "node_0001"}
            )
    finally:
        await engine.dispose()
    (data_dir / "handover.toml").write_text("[node]\nname = 'old'\n", encoding="utf-8")
    return pupil.id


async def test_the_migration_makes_exactly_the_table(db_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    def diffs(conn: sa.Connection) -> list[Any]:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        out = []
        for d in compare_metadata(ctx, Base.metadata):
            item = d[0] if isinstance(d, list) else d
            names = {getattr(getattr(p, "table", None), "name", None) for p in item[1:]}
            names |= {getattr(p, "name", None) for p in item[1:]}
            if names & IDENTITY_TABLES:
                out.append(d)
        return out

    engine = make_engine(db_url)
    try:
        await migrate(engine)
        await migrate(engine)
        async with engine.connect() as conn:
            assert await conn.run_sync(diffs) == []
            assert await conn.run_sync(lambda c: sa.inspect(c).has_table("node_identity"))
    finally:
        await engine.dispose()


async def test_a_node_set_up_before_identities_is_given_one_by_its_own_kek(
    node_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "node"
    pupil_id = await _old_node(node_env, data)
    # A random KEK: refused before anything is read, and nothing is written.
    monkeypatch.setenv("HANDOVER_KEK", secrets.token_hex(32))
    with pytest.raises(WrongKekError, match="is not this node's key"):
        await Node.open(data, transport=http_transport)
    assert read_marker(data) is None and await _rows(node_env) == []
    # Its own KEK: the node gets its identity, in the database and in the data directory.
    monkeypatch.setenv("HANDOVER_KEK", KEK.hex())
    async with await Node.open(data, transport=http_transport) as node:
        dsl = await node.store.actor_for((await node.store.find_staff("123456", "dsl")).id)  # type: ignore[union-attr]
        assert (await node.store.get_pupil(dsl, pupil_id)).surname == "Okafor"
    marker = read_marker(data)
    assert marker is not None
    assert [r.node_id for r in await _rows(node_env)] == [marker.node_id]
    # From now on the check value decides, and a random KEK is refused as before.
    monkeypatch.setenv("HANDOVER_KEK", secrets.token_hex(32))
    with pytest.raises(WrongKekError):
        await Node.open(data, transport=http_transport)


async def test_read_only_commands_check_but_write_nothing(node_env: str, tmp_path: Path) -> None:
    data = tmp_path / "node"
    await _old_node(node_env, data)
    engine = make_engine(node_env)
    try:
        await migrate(engine)
        kwargs: dict[str, Any] = {"data_dir": data, "url": node_env, "kek_source": "HANDOVER_KEK"}
        with pytest.raises(WrongKekError):
            await check_identity(engine, secrets.token_bytes(32), adopt=False, **kwargs)
        found = await check_identity(engine, KEK, adopt=False, **kwargs)
        assert found is not None
        assert read_marker(data) is None and await _rows(node_env) == []
    finally:
        await engine.dispose()


async def test_first_opens_at_once_agree_on_one_identity(node_env: str, tmp_path: Path) -> None:
    """Several serve processes starting together on an older node: one identity, one row."""
    data = tmp_path / "node"
    await _old_node(node_env, data)
    engine = make_engine(node_env)
    try:
        await migrate(engine)
    finally:
        await engine.dispose()
    engines = [make_engine(node_env) for _ in range(4)]
    try:
        found = await asyncio.gather(
            *(
                check_identity(e, KEK, data_dir=data, url=node_env, kek_source="HANDOVER_KEK")
                for e in engines
            )
        )
    finally:
        for e in engines:
            await e.dispose()
    ids = {f.node_id for f in found if f is not None}
    assert len(ids) == 1
    assert [r.node_id for r in await _rows(node_env)] == list(ids)
    marker = read_marker(data)
    assert marker is not None and marker.node_id in ids


async def test_a_node_not_yet_set_up_is_left_alone(node_env: str, tmp_path: Path) -> None:
    data = tmp_path / "node"
    data.mkdir()
    (data / "handover.toml").write_text("[node]\nname = 'new'\n", encoding="utf-8")
    async with await Node.open(data, transport=http_transport):
        pass
    assert read_marker(data) is None and await _rows(node_env) == []


async def test_a_damaged_identity_file_is_named(node_env: str, tmp_path: Path) -> None:
    data = tmp_path / "node"
    await initialise(
        data,
        name="t",
        schools=[("123456", "8012000", "Hillside")],
        agencies=[],
        admin=None,
        admin_password=None,
    )
    raw = bytearray((data / MARKER).read_bytes())
    raw[30] ^= 0x80
    (data / MARKER).write_bytes(bytes(raw))
    with pytest.raises(DamagedStateError, match=f"identity file {data / MARKER} is damaged"):
        await Node.open(data, transport=http_transport)
