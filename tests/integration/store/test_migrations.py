"""The store's migration: applies from empty, is idempotent, and matches the models."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from transfer.store.db import Base, _alembic_config, make_engine, migrate
from transfer.store.tables import STORE_TABLES


def _diff(conn: Connection) -> list[Any]:
    ctx = MigrationContext.configure(conn, opts={"compare_type": True})
    diffs = compare_metadata(ctx, Base.metadata)

    def ours(d: Any) -> bool:
        item = d[0] if isinstance(d, list) else d
        for part in item[1:]:
            name = getattr(part, "name", None) or getattr(getattr(part, "table", None), "name", "")
            table = getattr(part, "table", None)
            if table is not None and getattr(table, "name", "") in STORE_TABLES:
                return True
            if isinstance(part, str) and part in STORE_TABLES:
                return True
            if name in STORE_TABLES:
                return True
        return False

    return [d for d in diffs if ours(d)]


def _inspect(conn: Connection) -> dict[str, Any]:
    insp = sa.inspect(conn)
    return {
        "tables": set(insp.get_table_names()),
        "org_cols": {c["name"]: c for c in insp.get_columns("organisations")},
        "staff_cols": {c["name"]: c for c in insp.get_columns("staff")},
        "staff_uniques": insp.get_unique_constraints("staff"),
        "staff_fks": insp.get_foreign_keys("staff"),
        "heads": conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all(),
        "policies": conn.execute(
            sa.text("SELECT key, basis, years FROM retention_policies WHERE org_id IS NULL")
        ).all(),
    }


async def test_migrates_from_empty_idempotently_and_matches_models(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        await migrate(engine)
        await migrate(engine)  # a second run changes nothing and does not fail
        async with engine.connect() as conn:
            info = await conn.run_sync(_inspect)
            diffs = await conn.run_sync(_diff)
    finally:
        await engine.dispose()
    assert STORE_TABLES <= info["tables"]
    # Applied: a head, or a dependency of a head (auth depends on store_0001).
    script = ScriptDirectory.from_config(_alembic_config())
    applied = {r.revision for r in script.iterate_revisions(tuple(info["heads"]), "base")}
    assert "store_0001" in applied
    assert diffs == [], diffs
    # The two tables a colleague's migration depends on, exactly.
    assert set(info["org_cols"]) == {
        "id",
        "name",
        "kind",
        "urn",
        "laestab",
        "sealed_key",
        "created_at",
    }
    assert info["org_cols"]["urn"]["nullable"] and info["org_cols"]["laestab"]["nullable"]
    assert not info["org_cols"]["sealed_key"]["nullable"]
    assert set(info["staff_cols"]) == {
        "id",
        "org_id",
        "username",
        "display_name",
        "email",
        "roles",
        "active",
        "created_at",
    }
    assert info["staff_cols"]["email"]["nullable"]
    assert any(set(u["column_names"]) == {"org_id", "username"} for u in info["staff_uniques"])
    assert [(f["constrained_columns"], f["referred_table"]) for f in info["staff_fks"]] == [
        (["org_id"], "organisations")
    ]
    assert info["policies"] == [("cp-dob-25", "dob", 25)]


def test_store_branch_is_labelled_store() -> None:
    script = ScriptDirectory.from_config(_alembic_config())
    rev = script.get_revision("store_0001")
    assert rev is not None
    assert rev.down_revision is None
    assert "store" in rev.branch_labels
    assert script.get_revision("store@head") is not None
