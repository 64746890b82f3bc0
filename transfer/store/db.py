"""Database engine, declarative base and migrations.

SQLite (aiosqlite, WAL, ``synchronous=FULL`` so a committed transaction
survives a crash) is the embedded default; PostgreSQL (asyncpg) is the engine
for a local authority. The schema is only ever changed through Alembic
migrations (``migrate``); there is no ``create_all`` on a live database.

Migrations live in ``transfer/store/migrations/versions``; each area of the
code (``store``, ``audit``, ``transfer``...) has its own Alembic branch, and
``migrate`` upgrades every head.

A damaged database (a truncated or bit-flipped SQLite file, PostgreSQL's
``data_corrupted``) is recognised wherever SQLAlchemy meets it and raised as
:class:`~transfer.errors.DamagedStateError` naming the database and saying what
to do, never as a driver's traceback (:func:`damage_of`, :func:`make_engine`). A full
disk (SQLite's ``SQLITE_FULL``, PostgreSQL's ``disk_full``) is raised the same way as
:class:`~transfer.errors.OutOfSpaceError` (:mod:`transfer.space`).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import MetaData, event
from sqlalchemy.engine import Connection, ExceptionContext, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase

from transfer.errors import ConfigError, DamagedStateError, TransportError
from transfer.private_files import create_private, private_dir
from transfer.space import out_of_space, space_shortage

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

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


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (None for PostgreSQL or an in-memory database)."""
    if not is_sqlite(url):
        return None
    path = url.split("///", 1)[-1]
    return Path(path) if path and path != ":memory:" else None


def database_location(url: str) -> str:
    """Where the database is, for messages: a SQLite file, or PostgreSQL's database and host.

    Never the password or any other part of the URL.
    """
    path = sqlite_path(url)
    if path is not None:
        return str(path)
    if is_sqlite(url):
        return "the in-memory SQLite database"
    try:
        parsed = make_url(url)
    except ArgumentError:
        return "the configured database"
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.database!r} on {parsed.host or 'localhost'}{port} (PostgreSQL)"


#: SQLite's primary result codes for a damaged file (``SQLITE_CORRUPT``, ``SQLITE_NOTADB``).
_SQLITE_DAMAGE = frozenset({11, 26})
#: PostgreSQL's SQLSTATEs for damaged storage (``data_corrupted``, ``index_corrupted``).
_POSTGRES_DAMAGE = frozenset({"XX001", "XX002"})
#: What SQLite says of text it cannot decode (a flipped byte in a text value).
_UNDECODABLE = "Could not decode to UTF-8"


def _plain(text: str) -> str:
    """A driver's message made safe to print: printable ASCII, one line, short."""
    lines = text.splitlines()
    flat = "".join(c if " " <= c <= "~" else "?" for c in (lines[0] if lines else ""))
    return flat[:160] or "no detail"


def damage_of(exc: BaseException, *, from_database: bool = False) -> str | None:
    """Why ``exc`` shows the database itself is damaged (a short reason), or None.

    Looks through SQLAlchemy's wrapper and the exception's causes for SQLite's
    "database disk image is malformed" / "file is not a database" (and text it
    cannot decode) and PostgreSQL's ``data_corrupted`` / ``index_corrupted``.
    ``from_database``: ``exc`` was raised by the database driver itself, so a
    :class:`UnicodeDecodeError` means the file holds bytes where SQLite expected text
    (SQLite raises one when a damaged schema garbles its own error message).
    """
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, sqlite3.Error):
            code = getattr(e, "sqlite_errorcode", None)
            text = str(e)
            if (code is not None and code & 0xFF in _SQLITE_DAMAGE) or _UNDECODABLE in text:
                return _plain(text)
        if isinstance(e, UnicodeDecodeError) and from_database:
            return "it holds bytes that are not text where SQLite expects text"
        sqlstate = getattr(e, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate in _POSTGRES_DAMAGE:
            return _plain(str(e))
        todo += [getattr(e, "orig", None), e.__cause__, e.__context__]
    return None


def database_damaged(url: str, reason: str) -> DamagedStateError:
    """The error for a damaged database: where it is, and what the operator does about it."""
    where = database_location(url)
    return DamagedStateError(
        f"the database {where} is damaged ({reason}): stop the node, keep the damaged copy "
        "aside, and restore the database from your last backup (docs/operations.md, "
        "'Backup and restore')",
        detail={"database": "sqlite" if is_sqlite(url) else "postgresql"},
    )


def _watch_for_damage(engine: AsyncEngine, url: str) -> None:
    """Turn a damaged database into :class:`DamagedStateError` wherever SQLAlchemy meets it."""

    @event.listens_for(engine.sync_engine, "handle_error")
    def _damaged(ctx: ExceptionContext) -> None:
        reason = damage_of(ctx.original_exception, from_database=True)
        if reason is not None:
            raise database_damaged(url, reason) from ctx.original_exception
        # A full disk is not damage: the statement was undone; it works again once freed.
        if space_shortage(ctx.original_exception) is not None:
            raise out_of_space("database", database_location(url)) from ctx.original_exception


def make_engine(url: str, *, echo: bool = False, pool_size: int = 10) -> AsyncEngine:
    """An async engine for ``url`` with the pragmas and pool settings we rely on."""
    if is_sqlite(url):
        from transfer.store.sqlite_driver import one_hop_dbapi

        path = sqlite_path(url)
        engine = create_async_engine(
            url,
            echo=echo,
            connect_args={"timeout": 30},
            pool_size=pool_size,
            max_overflow=0,
            # One hop to the connection's thread per statement, not four (issue 16).
            module=one_hop_dbapi(),
        )
        if path is not None:
            # At the first connection, not now: a node that was set up must still find its
            # database missing (identity.require_database) rather than a new empty file.
            @event.listens_for(engine.sync_engine, "do_connect")
            def _private_file(*_args: Any) -> None:
                _private_database_file(path)

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            try:
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=FULL")
                cur.execute("PRAGMA foreign_keys=ON")
                cur.execute("PRAGMA busy_timeout=30000")
            except (sqlite3.Error, UnicodeDecodeError) as exc:
                # The first statement on a new connection is where a damaged file shows.
                reason = damage_of(exc, from_database=True)
                if reason is not None:
                    raise database_damaged(url, reason) from exc
                if space_shortage(exc) is not None:
                    raise out_of_space("database", database_location(url)) from exc
                raise
            finally:
                cur.close()

        _watch_for_damage(engine, url)
        return engine
    if url.startswith("postgresql+asyncpg://"):
        engine = create_async_engine(
            url, echo=echo, pool_size=pool_size, max_overflow=5, pool_pre_ping=True
        )
        _watch_for_damage(engine, url)
        return engine
    raise ConfigError(f"unsupported database URL scheme in {url.split(':', 1)[0]!r}")


def _private_database_file(path: Path) -> None:
    """Create the SQLite file 0600 before SQLite does, so its ``-wal`` and ``-shm`` files,
    which SQLite makes with the database file's mode, are 0600 as well."""
    private_dir(path.parent)
    try:
        os.close(create_private(path))
    except FileExistsError:
        pass  # an existing database keeps its file (``tighten`` closes an open mode)


async def check_integrity(engine: AsyncEngine, url: str) -> None:
    """Read the whole SQLite file once (``PRAGMA quick_check``); raise if it is damaged.

    ``serve`` runs this before it starts, so a damaged file stops the node at once
    rather than at the first request that reads the damaged page. It reads every
    page (about a second per few hundred MB). PostgreSQL checks its own pages as
    it reads them, so there is nothing to do for it here.
    """
    if not is_sqlite(url):
        return
    async with engine.connect() as conn:
        rows = [str(r) for r in (await conn.exec_driver_sql("PRAGMA quick_check")).scalars()]
    if rows != ["ok"]:
        # The first line may be a heading ("*** in database main ***"); name the first problem.
        lines = [line for r in rows for line in r.splitlines()]
        problems = [line for line in lines if line.strip() and not line.startswith("***")]
        raise database_damaged(
            url, _plain(problems[0] if problems else "the check returned nothing")
        )


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[Any]:
    return async_sessionmaker(engine, expire_on_commit=False)


def _alembic_config() -> AlembicConfig:
    # Alembic is imported when a schema is migrated, not by every command that reads one.
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("version_locations", str(MIGRATIONS / "versions"))
    cfg.set_main_option("path_separator", "os")
    return cfg


def _upgrade(connection: Connection) -> None:
    cfg = _alembic_config()
    cfg.attributes["connection"] = connection
    from alembic import command

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
