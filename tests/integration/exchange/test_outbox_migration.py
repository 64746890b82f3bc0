"""The outbox branch migrates (after the store's first revision), matches its tables, downgrades."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection

from transfer.exchange.tables import OUTBOX_TABLES
from transfer.store.db import MIGRATIONS, Base, make_engine


def _cfg(conn: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("version_locations", str(MIGRATIONS / "versions"))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["connection"] = conn
    return cfg


def _ours(conn: Connection) -> tuple[set[str], list[Any]]:
    tables = set(sa.inspect(conn).get_table_names())
    diffs = compare_metadata(
        MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
    )
    return tables, [d for d in diffs if any(t in repr(d) for t in OUTBOX_TABLES)]


async def test_outbox_branch_alone(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        for _ in range(2):  # a second run changes nothing
            async with engine.begin() as conn:
                await conn.run_sync(lambda c: command.upgrade(_cfg(c), "outbox@head"))
        async with engine.connect() as conn:
            tables, diffs = await conn.run_sync(_ours)
        assert OUTBOX_TABLES <= tables and "organisations" in tables  # depends on store_0001
        assert diffs == []
        async with engine.begin() as conn:
            await conn.run_sync(lambda c: command.downgrade(_cfg(c), "outbox@base"))
        async with engine.connect() as conn:
            left = await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
        assert not OUTBOX_TABLES & left and "organisations" in left
    finally:
        await engine.dispose()
