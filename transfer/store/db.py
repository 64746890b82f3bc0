"""Database engine, declarative base and migrations.

SQLite (aiosqlite, WAL, ``synchronous=FULL`` so a committed transaction
survives a crash) is the embedded default; PostgreSQL (asyncpg) is the engine
for a local authority. The schema is only ever changed through Alembic
migrations (``migrate``); there is no ``create_all`` on a live database.

Migrations live in ``transfer/store/migrations/versions``; each area of the
code (``store``, ``audit``, ``transfer``...) has its own Alembic branch, and
``migrate`` upgrades every head.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import MetaData, event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase

from transfer.errors import ConfigError, TransportError
from transfer.private_files import create_private, private_dir

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(url: str, *, echo: bool = False, pool_size: int = 10) -> AsyncEngine:
    """An async engine for ``url`` with the pragmas and pool settings we rely on."""
    if is_sqlite(url):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            _private_database_file(Path(path))
        engine = create_async_engine(
            url, echo=echo, connect_args={"timeout": 30}, pool_size=pool_size, max_overflow=0
        )

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    if url.startswith("postgresql+asyncpg://"):
        return create_async_engine(
            url, echo=echo, pool_size=pool_size, max_overflow=5, pool_pre_ping=True
        )
    raise ConfigError(f"unsupported database URL scheme in {url.split(':', 1)[0]!r}")


def _private_database_file(path: Path) -> None:
    """Create the SQLite file 0600 before SQLite does, so its ``-wal`` and ``-shm`` files,
    which SQLite makes with the database file's mode, are 0600 as well."""
    private_dir(path.parent)
    try:
        os.close(create_private(path))
    except FileExistsError:
        pass  # an existing database keeps its file (``tighten`` closes an open mode)


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[Any]:
    return async_sessionmaker(engine, expire_on_commit=False)


def _alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("version_locations", str(MIGRATIONS / "versions"))
    cfg.set_main_option("path_separator", "os")
    return cfg


def _upgrade(connection: Connection) -> None:
    cfg = _alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "heads")


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema up to date (every branch head). Safe to run repeatedly."""
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade)
    except OSError as exc:
        raise TransportError(f"cannot reach the database to migrate it: {exc}") from None


def migrate_url(url: str) -> None:
    """Synchronous convenience for CLI commands and tests."""

    async def _go() -> None:
        engine = make_engine(url)
        try:
            await migrate(engine)
        finally:
            await engine.dispose()

    asyncio.run(_go())
