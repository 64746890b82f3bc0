"""The referrals migration applies on both engines and matches the tables' models."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

import transfer.referrals.tables  # noqa: F401  (registers the tables on Base.metadata)
from transfer.referrals.tables import REFERRAL_TABLES
from transfer.store.db import Base, _alembic_config, make_engine, migrate


def _ours(diff: Any) -> bool:
    item = diff[0] if isinstance(diff, list) else diff
    for part in item[1:]:
        table = getattr(part, "table", None)
        names = {getattr(part, "name", None), getattr(table, "name", None)}
        if isinstance(part, str):
            names.add(part)
        if names & REFERRAL_TABLES:
            return True
    return False


def _diff(conn: Connection) -> list[Any]:
    ctx = MigrationContext.configure(conn, opts={"compare_type": True})
    return [d for d in compare_metadata(ctx, Base.metadata) if _ours(d)]


async def test_migration_matches_the_tables(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        await migrate(engine)
        await migrate(engine)
        async with engine.connect() as conn:
            diffs = await conn.run_sync(_diff)
    finally:
        await engine.dispose()
    assert diffs == [], diffs


def test_branch_is_labelled_and_depends_on_the_store() -> None:
    script = ScriptDirectory.from_config(_alembic_config())
    rev = script.get_revision("referrals_0001")
    assert rev is not None and "referrals" in rev.branch_labels
    assert rev.dependencies == "store_0001"
