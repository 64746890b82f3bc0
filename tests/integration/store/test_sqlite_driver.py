"""The SQLite driver (transfer.store.sqlite_driver): one hop to the connection's thread per
statement, with the results, row counts, errors and transactions of SQLAlchemy's own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from transfer.store.db import make_engine
from transfer.store.sqlite_driver import _one_hop_possible

_md = MetaData()
_t = Table("t", _md, Column("id", Integer, primary_key=True), Column("v", String(10)))


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    eng = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    async with eng.begin() as c:
        await c.run_sync(_md.create_all)
    yield eng
    await eng.dispose()


async def test_each_statement_is_one_call_on_the_connections_thread(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real = aiosqlite.Connection._execute

    async def counting(self: aiosqlite.Connection, fn: object, *a: object, **kw: object) -> object:
        calls.append(getattr(fn, "__name__", repr(fn)))
        return await real(self, fn, *a, **kw)  # type: ignore[no-untyped-call]

    async with engine.connect() as c:
        await c.execute(select(_t))  # the connection is set up; count from here
        monkeypatch.setattr(aiosqlite.Connection, "_execute", counting)
        rows = (await c.execute(select(_t).where(_t.c.id == 1))).all()
        assert rows == []
        # SQLAlchemy's own cursor made four: cursor, execute, fetchall, close.
        assert len(calls) == 1


async def test_results_counts_and_ids_are_as_sqlite_gives_them(engine: AsyncEngine) -> None:
    async with engine.begin() as c:
        many = await c.execute(_t.insert(), [{"id": i, "v": "a"} for i in range(1, 21)])
        assert many.rowcount == 20
        one = await c.execute(_t.insert().values(id=100, v="b"))
        assert one.inserted_primary_key == (100,)
        changed = await c.execute(_t.update().where(_t.c.id <= 5).values(v="c"))
        assert changed.rowcount == 5
        gone = await c.execute(_t.delete().where(_t.c.id > 15).returning(_t.c.id))
        assert sorted(r[0] for r in gone) == [16, 17, 18, 19, 20, 100]
        assert (await c.execute(select(_t.c.v).where(_t.c.id == 3))).scalar_one() == "c"
        streamed = await c.stream(select(_t.c.id).order_by(_t.c.id).limit(3))
        assert [r[0] async for r in streamed] == [1, 2, 3]


async def test_errors_and_rollback_behave_as_before(engine: AsyncEngine) -> None:
    async with engine.begin() as c:
        await c.execute(_t.insert().values(id=1, v="kept"))
    with pytest.raises(IntegrityError):
        async with engine.begin() as c:
            await c.execute(_t.insert().values(id=2, v="undone"))
            await c.execute(_t.insert().values(id=1, v="twice"))
    async with engine.connect() as c:
        assert (await c.execute(select(_t.c.id, _t.c.v))).all() == [(1, "kept")]


def test_a_connection_without_the_thread_call_keeps_sqlalchemys_cursor() -> None:
    assert not _one_hop_possible(object())


async def test_a_read_makes_no_call_to_commit_or_roll_back_nothing(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with engine.connect() as c:
        await c.execute(select(_t))  # a connection in the pool, set up
    calls: list[str] = []
    real = aiosqlite.Connection._execute

    async def counting(self: aiosqlite.Connection, fn: object, *a: object, **kw: object) -> object:
        calls.append(getattr(fn, "__name__", repr(fn)))
        return await real(self, fn, *a, **kw)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counting)
    async with engine.connect() as c:
        await c.execute(select(_t))
    # The select alone: SQLAlchemy's rollback as the connection goes back to the pool has
    # nothing to undo (the stock connection made a second call for it).
    assert len(calls) == 1
    calls.clear()
    async with engine.begin() as c:
        await c.execute(_t.insert().values(id=1, v="a"))
    assert len(calls) == 2  # the insert and its commit; the pool's reset has nothing to undo


async def test_an_uncommitted_write_is_still_rolled_back_when_the_connection_is_returned(
    engine: AsyncEngine,
) -> None:
    async with engine.connect() as c:
        await c.execute(_t.insert().values(id=1, v="left"))  # no commit
    async with engine.connect() as c:
        await c.execute(_t.insert().values(id=2, v="kept"))
        await c.commit()
        assert (await c.execute(select(_t.c.id))).all() == [(2,)]
    async with engine.begin() as c:
        await c.execute(_t.insert().values(id=3, v="undone"))
        await c.rollback()
    async with engine.connect() as c:
        assert (await c.execute(select(_t.c.id))).all() == [(2,)]


async def test_a_closed_connection_is_neither_committed_nor_rolled_back(
    engine: AsyncEngine,
) -> None:
    async with engine.connect() as c:
        raw = await c.get_raw_connection()
        adapted = raw.dbapi_connection
        assert adapted is not None
        await adapted._connection.close()
        adapted.rollback()  # no transaction and no thread left to ask: nothing happens
        adapted.commit()
        await c.invalidate()
