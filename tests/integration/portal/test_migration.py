"""The portal's migration makes exactly the tables its models describe, on each engine."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

import receivers.portal.tables  # noqa: F401 (registers the portal's models)
from receivers.portal.tables import PORTAL_TABLES
from transfer.store.db import Base, _alembic_config, make_engine, migrate


def _ours(diff: Any) -> bool:
    item = diff[0] if isinstance(diff, list) else diff
    for part in item[1:]:
        table = getattr(part, "table", None)
        names = {getattr(part, "name", None), getattr(table, "name", None)}
        if isinstance(part, str):
            names.add(part)
        if names & PORTAL_TABLES:
            return True
    return False


def _diff(conn: Connection) -> list[Any]:
    ctx = MigrationContext.configure(conn, opts={"compare_type": True})
    return [d for d in compare_metadata(ctx, Base.metadata) if _ours(d)]


async def test_migration_matches_models(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        await migrate(engine)
        await migrate(engine)  # idempotent
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
    finally:
        await engine.dispose()


def test_portal_branch() -> None:
    script = ScriptDirectory.from_config(_alembic_config())
    revision = script.get_revision("portal_0001")
    assert revision is not None
    assert revision.branch_labels == {"portal"}
    assert revision.dependencies == "store_0001"
