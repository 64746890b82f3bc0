"""The directory's migration: its own branch, after the store's, matching the models."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from transfer.directory.tables import DIRECTORY_TABLES
from transfer.store.db import Base, _alembic_config, make_engine, migrate


def _ours(diff: Any) -> bool:
    item = diff[0] if isinstance(diff, list) else diff
    for part in item[1:]:
        table = getattr(part, "table", None)
        name = getattr(part, "name", None)
        if (table is not None and getattr(table, "name", "") in DIRECTORY_TABLES) or (
            name in DIRECTORY_TABLES
        ):
            return True
        if isinstance(part, str) and part in DIRECTORY_TABLES:
            return True
    return False


def _check(conn: Connection) -> tuple[set[str], list[str], list[Any]]:
    insp = sa.inspect(conn)
    heads = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
    ctx = MigrationContext.configure(conn, opts={"compare_type": True})
    diffs = [d for d in compare_metadata(ctx, Base.metadata) if _ours(d)]
    return set(insp.get_table_names()), list(heads), diffs


async def test_directory_branch_applies_and_matches_the_models(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        await migrate(engine)
        await migrate(engine)
        async with engine.connect() as conn:
            tables, heads, diffs = await conn.run_sync(_check)
    finally:
        await engine.dispose()
    assert DIRECTORY_TABLES <= tables
    assert "directory_0001" in heads
    assert diffs == [], diffs
    rev = ScriptDirectory.from_config(_alembic_config()).get_revision("directory_0001")
    assert rev is not None and "directory" in rev.branch_labels
    assert rev.dependencies == "store_0001"
