"""Alembic environment: runs on the connection handed over by ``transfer.store.db.migrate``."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from transfer.store.db import Base

connection: Connection | None = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through transfer.store.db.migrate()")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
