"""A log remembers the head it last committed, and checks it under the lock before using it.

Two logs over one database stand for two processes: each appends after the other's
entries, never over them, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import sqlalchemy as sa

from tests.integration.audit.conftest import event
from transfer.audit.entry import decode
from transfer.audit.log import AuditLog
from transfer.store.db import make_engine


async def test_appends_follow_entries_another_writer_made(
    open_log: Callable[..., AuditLog], migrated_url: str
) -> None:
    a, b = open_log(anchor=False), open_log(anchor=False)
    try:
        assert await a.append(event(0)) == 0
        assert await b.append(event(1)) == 1
        # a's remembered head (size 1) is stale now: it must append at 2, after b's entry.
        assert await a.append(event(2)) == 2
        assert await a.append(event(3)) == 3
        assert await b.append_many([event(4), event(5)]) == [4, 5]
        given = await asyncio.gather(a.append(event(6)), a.append(event(7)), b.append(event(8)))
        assert sorted(given) == [6, 7, 8]
        assert await a.verify() == await b.verify() == 9
    finally:
        await a.close()
        await b.close()
    engine = make_engine(migrated_url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(sa.text("SELECT seq, body FROM audit_entries"))).all()
    finally:
        await engine.dispose()
    # Every entry is stored at its own position, and names the event appended there.
    assert sorted(int(seq) for seq, _ in rows) == list(range(9))
    by_seq = {int(seq): decode(bytes(body)) for seq, body in rows}
    assert [by_seq[s].seq for s in range(6)] == list(range(6))
    assert [by_seq[s].request_id for s in range(6)] == [f"req-{i}" for i in range(6)]
