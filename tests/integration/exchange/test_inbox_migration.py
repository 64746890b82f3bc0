"""The inbox branch: applies from empty, is idempotent, downgrades, and matches the tables."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

import transfer.exchange.tables  # noqa: F401  (registers the tables on Base.metadata)
from transfer.exchange.tables import INBOX_TABLES
from transfer.store.db import MIGRATIONS, Base, _alembic_config, make_engine, migrate


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
    return tables, [d for d in diffs if any(t in repr(d) for t in INBOX_TABLES)]


async def test_inbox_branch_migrates_matches_and_downgrades(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        await migrate(engine)
        await migrate(engine)  # idempotent
        async with engine.connect() as conn:
            tables, diffs = await conn.run_sync(_ours)
        assert INBOX_TABLES <= tables
        assert diffs == [], diffs
        async with engine.begin() as conn:
            await conn.run_sync(lambda c: command.downgrade(_cfg(c), "inbox@base"))
        async with engine.connect() as conn:
            tables, _ = await conn.run_sync(_ours)
        assert not INBOX_TABLES & tables
        assert "organisations" in tables  # only our branch went
    finally:
        await engine.dispose()


def test_inbox_branch_is_labelled_and_depends_on_the_store() -> None:
    script = ScriptDirectory.from_config(_alembic_config())
    rev = script.get_revision("inbox_0001")
    assert rev is not None and rev.down_revision is None
    assert "inbox" in rev.branch_labels
    assert rev.dependencies == "store_0001"
