"""The audit branch migrates on its own, idempotently, downgrades, and matches the tables."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection

from transfer.audit.tables import AUDIT_TABLES
from transfer.store.db import MIGRATIONS, Base, make_engine


def _cfg(conn: Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("version_locations", str(MIGRATIONS / "versions"))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["connection"] = conn
    return cfg


def _upgrade(conn: Connection) -> None:
    command.upgrade(_cfg(conn), "audit@head")


def _downgrade(conn: Connection) -> None:
    command.downgrade(_cfg(conn), "audit@base")


def _ours(conn: Connection) -> tuple[set[str], list[Any], list[Any]]:
    tables = set(sa.inspect(conn).get_table_names())
    diffs = compare_metadata(
        MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
    )

    def mine(d: Any) -> bool:
        return any(t in repr(d) for t in AUDIT_TABLES)

    head = conn.execute(sa.text("SELECT size, compact, last_leaf FROM audit_head")).all()
    return tables, [d for d in diffs if mine(d)], list(head)


async def test_audit_branch_alone(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        for _ in range(2):  # a second run changes nothing
            async with engine.begin() as conn:
                await conn.run_sync(_upgrade)
        async with engine.connect() as conn:
            tables, diffs, head = await conn.run_sync(_ours)
        assert AUDIT_TABLES <= tables
        assert not {"organisations", "pupils"} & tables  # only our branch was applied
        assert diffs == []
        assert [(r[0], bytes(r[1]), bytes(r[2])) for r in head] == [(0, b"", bytes(32))]
        async with engine.begin() as conn:
            await conn.run_sync(_downgrade)
        async with engine.connect() as conn:
            left = await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
        assert not AUDIT_TABLES & left
    finally:
        await engine.dispose()
