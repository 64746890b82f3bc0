"""SQLAlchemy's aiosqlite driver, with one hop to the connection's thread per statement.

aiosqlite runs each SQLite connection on a thread of its own; SQLAlchemy's adapter asks that
thread for a cursor, then to execute, then to fetch the rows, then to close the cursor: four
round trips (a queue, a thread wake-up and an event-loop wake-up each) for every statement.
With a few dozen short statements per package that was a large part of a node's CPU during a
transition-week burst (issue 16; ``docs/adr/0014-one-hop-sqlite-statements.md``). This
cursor does the four steps in one function on the connection's thread: the same statements,
on the same connection, in the same transaction, in the same order; only the hand-overs are
fewer. Results are read whole, as the stock (non-server-side) cursor also does.

It relies on two attributes of :class:`aiosqlite.Connection` that are not its public API
(``_conn``, the :class:`sqlite3.Connection`, and ``_execute``, which runs a function on the
connection's thread); a connection without them keeps SQLAlchemy's own cursor.
"""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Sequence
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util import EMPTY_DICT

_Ran = tuple[Any, list[Any] | None, int, int | None]


class _OneHopCursor(AsyncAdapt_aiosqlite_cursor):
    """A cursor whose every statement is one call on the connection's thread."""

    __slots__ = ("_arraysize", "_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: AsyncAdapt_aiosqlite_connection) -> None:
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]  # no aiosqlite cursor: see _run
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None
        self._arraysize = 1

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int:
        return self._lastrowid  # type: ignore[return-value]

    @property
    def arraysize(self) -> int:
        return self._arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._arraysize = value

    async def _async_soft_close(self) -> None:
        """Nothing to close: the SQLite cursor was closed on the thread (its results are
        held here)."""

    def close(self) -> None:
        self._rows.clear()

    async def _run(self, method: str, *args: Any) -> None:
        """``cursor.<method>(*args)``, the description, rows, row count and last row id, in
        one call on the connection's thread."""
        raw: sqlite3.Connection = self._connection._conn

        def run() -> _Ran:
            cur = raw.cursor()
            try:
                getattr(cur, method)(*args)
                description = cur.description
                rows = cur.fetchall() if description else None
                return description, rows, cur.rowcount, cur.lastrowid
            finally:
                cur.close()

        async with self._adapt_connection._execute_mutex:
            ran: _Ran = await self._connection._execute(run)
        self._description, rows, self._rowcount, self._lastrowid = ran
        self._rows = collections.deque(rows or ())

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        if parameters is None:
            await self._run("execute", operation)
        else:
            await self._run("execute", operation, parameters)
        return self

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> Any:
        await self._run("executemany", operation, seq_of_parameters)
        return self

    def nextset(self) -> None:
        self._rows.clear()  # SQLite has one result set per statement

    def setinputsizes(self, *inputsizes: Any) -> None:
        return None


class _OneHopConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = _OneHopCursor  # type: ignore[assignment]  # a subclass of it

    def _idle(self) -> bool:
        """True if no transaction is open, so a commit or rollback has nothing to do.

        :mod:`sqlite3` itself does nothing then (it checks ``sqlite3_get_autocommit``); the
        pool rolls back every connection it takes back, and a session or connection that
        only read rolls back once more as it closes, each a hop to the connection's thread.
        Read here, between statements: nothing runs on this connection's thread meanwhile.
        """
        raw: sqlite3.Connection | None = self._connection._connection  # None once closed
        return raw is None or not raw.in_transaction

    def rollback(self) -> None:
        if not self._idle():
            super().rollback()

    def commit(self) -> None:
        if not self._idle():
            super().commit()


def _one_hop_possible(connection: object) -> bool:
    return isinstance(getattr(connection, "_conn", None), sqlite3.Connection) and callable(
        getattr(connection, "_execute", None)
    )


class OneHopDbapi(AsyncAdapt_aiosqlite_dbapi):
    """The aiosqlite DBAPI adapter, handing out connections with :class:`_OneHopCursor`."""

    def connect(self, *arg: Any, **kw: Any) -> AsyncAdapt_aiosqlite_connection:
        connection = super().connect(*arg, **kw)
        if _one_hop_possible(connection._connection):
            connection.__class__ = _OneHopConnection
        return connection


def one_hop_dbapi() -> OneHopDbapi:
    """The ``module`` to give ``create_async_engine`` for an ``sqlite+aiosqlite`` URL."""
    return OneHopDbapi(aiosqlite, sqlite3)


__all__: Sequence[str] = ["OneHopDbapi", "one_hop_dbapi"]
