"""The auth migration: its own branch, applied after the store's, matching the models."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection

from transfer.auth import tables as models
from transfer.store.db import Base, make_engine, migrate

AUTH_TABLES = {
    "auth_credentials",
    "auth_recovery_codes",
    "auth_sessions",
    "auth_api_tokens",
    "auth_unknown_signins",
    "auth_approvals",
    "auth_invitations",
}


def _ours(diff: Any) -> bool:
    item = diff[0] if isinstance(diff, list) else diff
    for part in item[1:]:
        table = getattr(part, "table", None)
        name = getattr(part, "name", None)
        if (table is not None and getattr(table, "name", "") in AUTH_TABLES) or name in AUTH_TABLES:
            return True
        if isinstance(part, str) and part in AUTH_TABLES:
            return True
    return False


def _check(conn: Connection) -> tuple[set[str], list[str], list[Any]]:
    insp = sa.inspect(conn)
    heads = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
    ctx = MigrationContext.configure(conn, opts={"compare_type": True})
    diffs = [d for d in compare_metadata(ctx, Base.metadata) if _ours(d)]
    return set(insp.get_table_names()), list(heads), diffs


async def test_auth_branch_applies_and_matches_the_models(db_url: str) -> None:
    assert models.Credential.__tablename__ in AUTH_TABLES
    engine = make_engine(db_url)
    try:
        await migrate(engine)
        await migrate(engine)
        async with engine.connect() as conn:
            tables, heads, diffs = await conn.run_sync(_check)
    finally:
        await engine.dispose()
    assert AUTH_TABLES <= tables
    assert "auth_0004" in heads
    assert diffs == [], diffs
