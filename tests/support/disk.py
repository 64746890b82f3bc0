"""A full disk, made for real without root: a file-size limit on this process (SQLite, files)
or PostgreSQL's own ``disk_full`` error from every write (the server's disk cannot be filled
from a test).

Mounting a small file system needs root, which the tests do not have. What a full disk does
to the node is what these make happen:

- :func:`file_size_limit` sets ``RLIMIT_FSIZE`` on the test process: the kernel refuses to
  grow any regular file past the limit (Python ignores ``SIGXFSZ``, so a write gets
  ``EFBIG``, or writes short). SQLite, writing its WAL, reports ``SQLITE_FULL`` ("database or
  disk is full") exactly as on a full disk.
- :func:`postgres_full` makes every insert, update and delete on the node's tables fail
  with SQLSTATE 53100 (``disk_full``), raised by PostgreSQL itself and carried back by
  asyncpg as on a server whose disk filled.
"""

from __future__ import annotations

import resource
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine


@contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """No regular file this process writes may grow past ``limit`` bytes, until the block ends."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


async def empty_sqlite_wal(engine: AsyncEngine) -> None:
    """Move the WAL into the database file, leaving it empty: the next write starts the WAL
    afresh at offset 0, so a small :func:`file_size_limit` stops it. The pool is left with
    one open connection (a new one would need room for SQLite's shared-memory file)."""
    await engine.dispose()
    async with engine.connect() as conn:
        await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")


@asynccontextmanager
async def postgres_full(engine: AsyncEngine) -> AsyncIterator[None]:
    """Every write to the node's tables fails with PostgreSQL's ``disk_full`` until the block
    ends (then the triggers go, as space freed)."""
    async with engine.begin() as conn:
        tables = (
            (
                await conn.execute(
                    sa.text(
                        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                        "AND tablename <> 'alembic_version'"
                    )
                )
            )
            .scalars()
            .all()
        )
        await conn.execute(
            sa.text(
                "CREATE FUNCTION disk_is_full() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                'RAISE EXCEPTION \'could not extend file "base/16384/16385": No space left on '
                "device' USING ERRCODE = 'disk_full'; END $$"
            )
        )
        for table in tables:
            await conn.execute(
                sa.text(
                    f'CREATE TRIGGER disk_full BEFORE INSERT OR UPDATE OR DELETE ON "{table}" '
                    "FOR EACH STATEMENT EXECUTE FUNCTION disk_is_full()"
                )
            )
    try:
        yield
    finally:
        async with engine.begin() as conn:
            for table in tables:
                await conn.execute(sa.text(f'DROP TRIGGER disk_full ON "{table}"'))
            await conn.execute(sa.text("DROP FUNCTION disk_is_full()"))


@asynccontextmanager
async def disk_full(engine: AsyncEngine, *, limit: int = 1000) -> AsyncIterator[None]:
    """The node's disk is full until the block ends: a file-size limit of ``limit`` bytes
    (SQLite: the WAL emptied first, so its next write meets it) or, on PostgreSQL, the
    server's ``disk_full`` from every write and the same file-size limit for files."""
    if engine.dialect.name == "sqlite":
        await empty_sqlite_wal(engine)
        with file_size_limit(limit):
            yield
        return
    async with postgres_full(engine):
        with file_size_limit(limit):
            yield
